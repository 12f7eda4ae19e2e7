//! The Debian package (`packaging/build-deb.sh`, cargo-deb) holds what a C
//! or C++ user and an operator need, and a C program builds and runs
//! against it through pkg-config and through CMake's `find_package(wshub)`.
//!
//! Slow (a release build and `cargo deb`), so `#[ignore]`d: CI runs it with
//! `cargo test --test debian_package_links_with_pkg_config_and_cmake -- --ignored`.
//! By default the package is extracted with `dpkg-deb -x` into a temporary
//! directory (nothing is installed on the machine); with
//! `WSHUB_DEB_INSTALL=1` (a throwaway CI container) it is installed with
//! `dpkg -i`, used from /usr, and removed with `dpkg -r` at the end.

mod c_common;
use c_common as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const APP: &str = r#"
#include <stdio.h>
#include <string.h>
#include "wshub.h"
int main(void) {
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server_stats stats;
    wshub_result rc = wshub_config_set_bind(config, "127.0.0.1:0");
    if (rc == WSHUB_OK) rc = wshub_start(config, &callbacks, NULL, &server);
    wshub_config_free(config);
    if (rc != WSHUB_OK) { fprintf(stderr, "%s\n", wshub_error_message(rc)); return 1; }
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    if (wshub_stats(server, &stats) != WSHUB_OK) return 2;
    printf("wshub %s on port %u\n", wshub_version(), (unsigned)wshub_local_port(server));
    wshub_stop(server);
    return strcmp(wshub_version(), WSHUB_VERSION) != 0;
}
"#;

const CMAKE_LISTS: &str = r#"
cmake_minimum_required(VERSION 3.16)
project(wshub_user C)
find_package(wshub 0.1 REQUIRED)
add_executable(app_shared app.c)
target_link_libraries(app_shared PRIVATE wshub::wshub)
add_executable(app_static app.c)
target_link_libraries(app_static PRIVATE wshub::wshub_static)
"#;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package; its path.
fn build_deb() -> PathBuf {
    let mut build = Command::new(repo().join("packaging/build-deb.sh"));
    c_common::child_common::without_cargo_test_env(&mut build);
    let out = run(build.current_dir(repo()));
    let deb = out.lines().rev().find(|l| l.trim().ends_with(".deb")).map(|l| PathBuf::from(l.trim()));
    let deb = deb.unwrap_or_else(|| panic!("no .deb path in cargo deb's output:\n{out}"));
    if deb.is_absolute() {
        deb
    } else {
        repo().join(deb)
    }
}

fn check_app(bin: &Path, lib_dir: &Path, what: &str) {
    let out = run(Command::new(bin).env("LD_LIBRARY_PATH", lib_dir));
    assert!(out.starts_with(&format!("wshub {} on port ", env!("CARGO_PKG_VERSION"))), "{what}: {out}");
}

#[test]
#[ignore = "slow: a release build and cargo deb; CI runs it with --ignored"]
fn the_package_holds_the_binary_library_units_and_dev_files_that_pkg_config_and_cmake_find() {
    let deb = build_deb();
    let work = std::env::temp_dir().join(format!("wshub-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let install = std::env::var("WSHUB_DEB_INSTALL").is_ok_and(|v| v == "1");
    let root = if install {
        run(Command::new("dpkg").arg("-i").arg(&deb));
        PathBuf::from("/")
    } else {
        let root = work.join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        root
    };
    let usr = root.join("usr");

    // What the package holds.
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/wshub",
        "./usr/bin/wshub-cli",
        "./usr/lib/libwshub.so -> libwshub.so.0",
        "./usr/lib/libwshub.so.0 -> libwshub.so.0.",
        "./usr/lib/libwshub.a",
        "./usr/include/wshub.h",
        "./usr/lib/pkgconfig/wshub.pc",
        "./usr/lib/cmake/wshub/wshubConfig.cmake",
        "./usr/lib/cmake/wshub/wshubConfigVersion.cmake",
        "./etc/wshub/wshub.toml",
        "./usr/share/doc/wshub/wshub--help.txt",
        "./usr/share/man/man1/wshub.1.gz",
        "wshub.service",
        "wshub.socket",
    ] {
        assert!(contents.contains(path), "no {path} in the package:\n{contents}");
    }
    let help = run(Command::new(usr.join("bin/wshub")).arg("--help"));
    assert!(help.contains("--bind"), "{help}");
    // The man page the unit's Documentation= names renders, with the flags.
    let man =
        run(Command::new("man").arg("-l").arg(usr.join("share/man/man1/wshub.1.gz")).env("MANWIDTH", "100"));
    assert!(man.contains("--bind") && man.contains("genconfig"), "{man}");

    // pkg-config, against the package's .pc (its prefix redefined to where it is).
    let app = work.join("app.c");
    std::fs::write(&app, APP).unwrap();
    let mut pkg = Command::new("pkg-config");
    if !install {
        pkg.env("PKG_CONFIG_PATH", usr.join("lib/pkgconfig")).arg("--define-prefix");
    }
    let flags = run(pkg.args(["--cflags", "--libs", "wshub"]));
    let bin = work.join("app-pkg-config");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .arg(&app)
        .arg("-o")
        .arg(&bin)
        .args(flags.split_whitespace()));
    check_app(&bin, &usr.join("lib"), "pkg-config");

    // CMake: find_package(wshub 0.1) with the shared and the static target.
    let project = work.join("cmake-project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("app.c"), APP).unwrap();
    std::fs::write(project.join("CMakeLists.txt"), CMAKE_LISTS).unwrap();
    let build = work.join("cmake-build");
    let mut configure = Command::new("cmake");
    configure.arg("-S").arg(&project).arg("-B").arg(&build);
    if !install {
        configure.arg(format!("-DCMAKE_PREFIX_PATH={}", usr.display()));
    }
    run(&mut configure);
    run(Command::new("cmake").arg("--build").arg(&build));
    check_app(&build.join("app_shared"), &usr.join("lib"), "cmake shared");
    check_app(&build.join("app_static"), Path::new("/nonexistent"), "cmake static");

    if install {
        run(Command::new("dpkg").args(["-r", "wshub"]));
        assert!(!Path::new("/usr/lib/libwshub.so").exists(), "dpkg -r left the library");
    }
    let _ = std::fs::remove_dir_all(&work);
}
