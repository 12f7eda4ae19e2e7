//! The install step of ffi-examples/README.md works: after
//! `tools/install-c-library.sh PREFIX`, `cc app.c $(pkg-config --cflags --libs
//! wshub)` builds a program that runs, for the shared library and (with
//! `--static`) the static one. The shared library carries the SONAME
//! `libwshub.so.<major>`, which the program records, and the install makes
//! the usual links to the versioned file.

mod c_common;
use c_common as common;

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
    wshub_result rc = wshub_config_set_bind(config, "127.0.0.1:0");
    if (rc == WSHUB_OK) rc = wshub_start(config, &callbacks, NULL, &server);
    wshub_config_free(config);
    if (rc != WSHUB_OK) { fprintf(stderr, "%s\n", wshub_error_message(rc)); return 1; }
    printf("wshub %s on port %u\n", wshub_version(), (unsigned)wshub_local_port(server));
    wshub_stop(server);
    return strcmp(wshub_version(), WSHUB_VERSION) != 0;
}
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

#[test]
fn pkg_config_flags_build_and_link_a_c_program() {
    let lib = staticlib_dir();
    let prefix = lib.join("ffi-tests/prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    run(Command::new(repo().join("tools/install-c-library.sh")).arg(&prefix).arg(&lib));
    let pc_path = prefix.join("lib/pkgconfig");
    let app = prefix.join("app.c");
    std::fs::write(&app, APP).unwrap();

    for (flavour, static_flag) in [("shared", None), ("static", Some("--static"))] {
        let mut pkg = Command::new("pkg-config");
        pkg.env("PKG_CONFIG_PATH", &pc_path).args(["--cflags", "--libs"]);
        if let Some(flag) = static_flag {
            pkg.arg(flag);
        }
        pkg.arg("wshub");
        let flags = run(&mut pkg);
        let bin = prefix.join(format!("app-{flavour}"));
        let mut cc = Command::new("cc");
        cc.args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]).arg(&app).arg("-o").arg(&bin);
        if static_flag.is_some() {
            // Prefer the archive over the .so next to it.
            cc.arg("-Wl,-Bstatic");
            let (libs, rest): (Vec<&str>, Vec<&str>) =
                flags.split_whitespace().partition(|f| *f == "-lwshub");
            cc.args(rest.iter().filter(|f| !f.starts_with("-l")));
            cc.args(libs).arg("-Wl,-Bdynamic").args(rest.iter().filter(|f| f.starts_with("-l")));
        } else {
            cc.args(flags.split_whitespace());
        }
        run(&mut cc);
        let out = run(Command::new(&bin).env("LD_LIBRARY_PATH", prefix.join("lib")));
        if static_flag.is_none() {
            let major = env!("CARGO_PKG_VERSION_MAJOR");
            let dynamic = run(Command::new("readelf").arg("-d").arg(&bin));
            assert!(dynamic.contains(&format!("[libwshub.so.{major}]")), "{dynamic}");
            let lib = prefix.join("lib");
            let link = std::fs::read_link(lib.join("libwshub.so")).expect("libwshub.so is a link");
            assert_eq!(link, std::path::Path::new(&format!("libwshub.so.{major}")));
            let soname = std::fs::read_link(lib.join(format!("libwshub.so.{major}"))).expect("a link");
            assert_eq!(soname, std::path::Path::new(&format!("libwshub.so.{}", env!("CARGO_PKG_VERSION"))));
        }
        assert!(
            out.starts_with(&format!("wshub {} on port ", env!("CARGO_PKG_VERSION"))),
            "{flavour}: {out}"
        );
    }
}
