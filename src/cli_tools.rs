//! The `wshub` binary's helper subcommands (part of the binary, not the
//! library): `genconfig` writes a config file with fresh secrets, `gentoken`
//! signs a token with that file's secret, `man` prints the man page and
//! `reference` the configuration reference's flag table, both generated from
//! the same clap definition as `wshub --help`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgAction, Command, Subcommand};

/// Where `genconfig` writes and `gentoken` reads when `--config` is not given.
const DEFAULT_CONFIG: &str = "wshub.toml";

/// The helper subcommands; `wshub` without one runs the server.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Write a config file with a fresh JWT secret and API key (from the OS's
    /// random source); refuses to overwrite an existing file.
    Genconfig {
        /// The file to write.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print an HS256 token signed with the config file's `jwt_secret`.
    Gentoken {
        /// The user (the token's `sub`).
        #[arg(long, value_name = "USER")]
        sub: String,
        /// Rooms the token may use (comma-separated or repeated; `chat:*` is a
        /// prefix). None given: every room.
        #[arg(long, value_name = "ROOMS", value_delimiter = ',')]
        rooms: Vec<String>,
        /// How long the token is valid: `90s`, `15m`, `1h`, `7d` (plain
        /// number: seconds).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// The config file holding `jwt_secret` (and `jwt_audience`/`jwt_issuer`,
        /// copied into the token when set).
        #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the man page (roff), generated from this command line's definition.
    #[command(hide = true)]
    Man,
    /// Print the configuration reference's flag table (Markdown), generated
    /// from this command line's definition.
    #[command(hide = true)]
    Reference,
}

/// Runs a subcommand; `command` is the whole CLI's definition (for `man` and
/// `reference`). Errors are for stderr, prefixed by the caller.
pub fn run(tool: Tool, command: Command) -> Result<(), String> {
    match tool {
        Tool::Genconfig { config } => genconfig(&config),
        Tool::Gentoken { sub, rooms, ttl, config } => {
            let token = gentoken(&config, &sub, &rooms, ttl)?;
            println!("{token}");
            Ok(())
        }
        Tool::Man => {
            let out = man_page(&command).map_err(|e| e.to_string())?;
            std::io::stdout().write_all(&out).map_err(|e| e.to_string())
        }
        Tool::Reference => {
            print!("{}", reference(&command));
            Ok(())
        }
    }
}

/// The man page wshub(1), the only page the package ships: clap_mangen's
/// sections, except that the subcommands are described here in full, with
/// their flags, where clap_mangen would name a page for each
/// (`wshub-genconfig(1)`) that does not exist.
fn man_page(command: &Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH SUBCOMMANDS\n");
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{} {}", command.get_name(), sub.get_name());
        out.extend_from_slice(format!(".TP\n\\fB{}\\fR [OPTIONS]\n", roff_text(&name)).as_bytes());
        if let Some(about) = sub.get_about() {
            out.extend_from_slice(format!("{}\n", roff_text(&about.to_string())).as_bytes());
        }
        let args: Vec<&Arg> =
            sub.get_arguments().filter(|a| !a.is_hide_set() && a.get_long().is_some()).collect();
        if args.is_empty() {
            continue;
        }
        out.extend_from_slice(b".RS\n");
        for arg in args {
            let long = arg.get_long().unwrap_or_default();
            let mut head = match arg.get_value_names() {
                Some(names) if arg.get_action().takes_values() => format!("--{long} <{}>", names[0]),
                _ => format!("--{long}"),
            };
            if let Some(default) = arg.get_default_values().first() {
                head.push_str(&format!(" [default: {}]", default.to_string_lossy()));
            }
            out.extend_from_slice(format!(".TP\n{}\n", roff_text(&head)).as_bytes());
            if let Some(help) = arg.get_help() {
                out.extend_from_slice(format!("{}\n", roff_text(&help.to_string())).as_bytes());
            }
        }
        out.extend_from_slice(b".RE\n");
    }
    if command.get_after_help().is_some() || command.get_after_long_help().is_some() {
        man.render_extra_section(&mut out)?;
    }
    man.render_version_section(&mut out)?;
    if command.get_author().is_some() {
        man.render_authors_section(&mut out)?;
    }
    // Each part clap_mangen renders starts with the same two lines defining
    // the apostrophe string (`Aq`): the page needs them once.
    let text = String::from_utf8_lossy(&out);
    let mut seen = std::collections::HashSet::new();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(".ie ") && !l.starts_with(".el ") || seen.insert(*l))
        .collect();
    Ok(format!("{}\n", lines.join("\n")).into_bytes())
}

/// `text` as roff prose: backslashes and dashes escaped, a line that would
/// start with a control character (`.` or `'`) guarded, lines joined.
fn roff_text(text: &str) -> String {
    text.lines()
        .map(|line| {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            if escaped.starts_with('.') || escaped.starts_with('\'') {
                format!("\\&{escaped}")
            } else {
                escaped
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `32` random bytes from the OS, as 64 hex digits.
fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn genconfig(path: &Path) -> Result<(), String> {
    let text = format!(
        "# wshub config, written by `wshub genconfig`. Every key is a flag's name\n\
         # with `_` for `-` (`wshub --help`); flags given on the command line win.\n\
         # Keep this file private: it holds the secrets below.\n\
         \n\
         bind = \"127.0.0.1:9001\"\n\
         \n\
         # Every upgrade needs a token signed with this (HS256); make one with\n\
         # `wshub gentoken --config {quoted} --sub USER`.\n\
         jwt_secret = \"{secret}\"\n\
         \n\
         # The backend HTTP API (/api/*): `Authorization: apikey <api_key>`.\n\
         api_key = \"{key}\"\n\
         \n\
         # wss:// and https:// on the same port:\n\
         # tls_cert = \"/etc/wshub/cert.pem\"\n\
         # tls_key = \"/etc/wshub/key.pem\"\n",
        quoted = shell_quoted(path),
        secret = random_hex()?,
        key = random_hex()?,
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{} exists; not overwriting it (remove it or pick another --config)", path.display())
        }
        _ => format!("cannot create {}: {e}", path.display()),
    })?;
    // The file is ours (create_new): a failed write (a full disk) removes it,
    // or it would stay empty and every later genconfig refuse to replace it.
    if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    eprintln!("wshub: wrote {} (a fresh jwt_secret and api_key)", path.display());
    Ok(())
}

/// `path` as one word for a POSIX shell: as it is when it holds only
/// characters no shell treats specially, else in single quotes (a `'` in it
/// as `'\''`). A path a line cannot hold (a control character) or that is not
/// UTF-8 is shown as `PATH`, for the user to fill in. A relative path that
/// starts with `-` gets `./` in front, or `--config` would take it for a flag.
fn shell_quoted(path: &Path) -> String {
    let Some(text) = path.to_str().filter(|t| !t.is_empty() && !t.chars().any(char::is_control)) else {
        return "PATH".to_owned();
    };
    let dotted;
    let text = if text.starts_with('-') {
        dotted = format!("./{text}");
        dotted.as_str()
    } else {
        text
    };
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c)) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The claims a `gentoken` token carries.
#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
}

fn gentoken(path: &Path, sub: &str, rooms: &[String], ttl: Duration) -> Result<String, String> {
    let file = wshub::ConfigFile::load(path)?;
    // Such a server accepts only tokens signed with the private key matching
    // that public key (RS*/ES*/EdDSA), which gentoken never has.
    if let Some(key) = &file.jwt_public_key {
        return Err(format!(
            "{} verifies tokens with jwt_public_key {}: gentoken signs only HS256 tokens, with a \
             jwt_secret; sign this server's tokens with the private key that matches that public key",
            path.display(),
            key.display()
        ));
    }
    let Some(secret) = file.jwt_secret.filter(|s| !s.is_empty()) else {
        return Err(format!("{} has no jwt_secret (`wshub genconfig` writes one)", path.display()));
    };
    // The server refuses a token with an empty `sub`, and a room name is never
    // empty: such a token would only ever be refused.
    if sub.is_empty() {
        return Err("--sub must not be empty (the server refuses a token without a user)".to_owned());
    }
    if rooms.iter().any(|room| room.is_empty()) {
        return Err("--rooms has an empty room name (a stray comma?)".to_owned());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let claims = Claims {
        sub,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        rooms: (!rooms.is_empty()).then_some(rooms),
        aud: file.jwt_audience,
        iss: file.jwt_issuer,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

/// `90s`, `15m`, `1h`, `7d`, or a number of seconds.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected a number then s, m, h or d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    match secs {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        Some(_) => Err(format!("{s:?}: a token must live longer than 0 s")),
        None => Err(format!("{s:?}: too long")),
    }
}

/// Flags that have no config-file key (the file cannot name itself).
const NO_CONFIG_KEY: &[&str] = &["config"];

/// Flags whose C setter is not `wshub_config_set_<key>` (nor `_add_`, `_file`):
/// `(flag id, C setter)`. A flag with no C counterpart is absent from the
/// header, and its column says so.
const C_SETTER_NAMES: &[(&str, &str)] =
    &[("heartbeat_ms", "wshub_config_set_heartbeat_interval_ms"), ("no_sse", "wshub_config_set_sse")];

/// The C header, to name each flag's C setter only when it exists.
const HEADER: &str = include_str!("../include/wshub.h");

/// The C function setting what flag `id` sets, when the header has one.
fn c_setter(id: &str) -> Option<String> {
    let declared = |name: &str| HEADER.contains(&format!(" {name}("));
    if let Some((_, name)) = C_SETTER_NAMES.iter().find(|(flag, _)| *flag == id) {
        return declared(name).then(|| name.to_string());
    }
    let names = [
        format!("wshub_config_set_{id}"),
        format!("wshub_config_add_{id}"),
        format!("wshub_config_set_{id}_file"),
        format!("wshub_config_set_{id}_pem"),
    ];
    names.into_iter().find(|name| declared(name))
}

/// The flag's name and value as `--help` writes them: `--bind <BIND>` (with
/// `|` escaped, as a Markdown table cell needs).
fn flag_cell(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    let cell = match arg.get_value_names() {
        Some(names) if takes_value => format!("`--{long} <{}>`", names[0]),
        _ if takes_value => format!("`--{long} <{}>`", arg.get_id().as_str().to_uppercase()),
        _ => format!("`--{long}`"),
    };
    cell.replace('|', "\\|")
}

/// The flag table of `docs/configuration.md`: every flag `wshub --help` lists,
/// with its config key, C setter, default and help text.
pub fn reference(command: &Command) -> String {
    let mut out =
        String::from("| Flag | Config key | C setter | Default | Meaning |\n|---|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_long().is_none() || arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        let key = if NO_CONFIG_KEY.contains(&id) { "—".to_string() } else { format!("`{id}`") };
        let setter = c_setter(id).map_or("—".to_string(), |s| format!("`{s}`"));
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let default =
            if defaults.is_empty() { "—".to_string() } else { format!("`{}`", defaults.join(",")) };
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
        out.push_str(&format!("| {} | {key} | {setter} | {default} | {help} |\n", flag_cell(arg)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit_or_seconds() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }

    #[test]
    fn paths_are_quoted_for_a_shell_and_never_break_the_line() {
        assert_eq!(shell_quoted(Path::new("/etc/wshub/wshub.toml")), "/etc/wshub/wshub.toml");
        assert_eq!(shell_quoted(Path::new("my config.toml")), "'my config.toml'");
        assert_eq!(shell_quoted(Path::new("it's $HOME")), "'it'\\''s $HOME'");
        // A newline would end the TOML comment and put the rest of the path in
        // the config as TOML.
        assert_eq!(shell_quoted(Path::new("a\njwt_secret = \"x\"")), "PATH");
        // `--config -x.toml` is the unknown flag -x to clap.
        assert_eq!(shell_quoted(Path::new("-x.toml")), "./-x.toml");
        assert_eq!(shell_quoted(Path::new("-my config")), "'./-my config'");
    }

    #[test]
    fn tokens_the_server_would_refuse_are_not_signed() {
        let dir = std::env::temp_dir().join(format!("wshub-gentoken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "jwt_secret = \"s3cret\"\n").unwrap();
        let empty = dir.join("empty.toml");
        std::fs::write(&empty, "jwt_secret = \"\"\n").unwrap();
        let hour = Duration::from_secs(3600);
        assert!(gentoken(&ok, "alice", &["chat:*".to_owned()], hour).is_ok());
        assert!(gentoken(&ok, "", &[], hour).is_err(), "an empty sub");
        assert!(gentoken(&ok, "alice", &["a".to_owned(), String::new()], hour).is_err(), "an empty room");
        assert!(gentoken(&empty, "alice", &[], hour).is_err(), "an empty secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
