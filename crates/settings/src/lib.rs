//! Settings read through one definition per stage.
//!
//! Each stage (the log, the in-memory tail, the HTTP layer, queries) keeps
//! its settings in a struct deriving clap's [`Args`]. That one definition
//! gives the flag (`--flush-bytes`), its environment twin
//! (`TALLY_FLUSH_BYTES`), the config file's key (`flush_bytes`, the field's
//! name), the help text, the value's type and parser, and the default: the
//! `default_value` written on the field is the only one, and the library's
//! own option structs start from it ([`defaults`]). The configuration table
//! of the docs is rendered from the same definitions ([`markdown_rows`]).
//!
//! Precedence is clap's own: a flag wins over its variable, which wins over
//! the file ([`file_values_as_defaults`] makes the file's values the
//! arguments' defaults), which wins over the built-in default.
//!
//! Durations are written with their unit (`"100ms"`, `"30s"`, `"24h"`, read
//! by `humantime`) and sizes with theirs or as a number of bytes
//! (`"16MiB"`, `16777216`, read by `bytesize`).

use clap::{Arg, Args, Command, FromArgMatches};
use std::time::Duration;

pub use bytesize::ByteSize;

/// The settings `T` holds when nothing is given: its defaults, with neither
/// flags nor environment read.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let cmd =
        T::augment_args(Command::new("defaults").no_binary_name(true)).mut_args(|a| a.env(None));
    let matches = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .unwrap_or_else(|e| panic!("a setting has no default: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("a default does not parse: {e}"))
}

/// The ids of `T`'s arguments: its config file keys.
pub fn ids<T: Args>() -> Vec<String> {
    T::augment_args(Command::new("ids"))
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .collect()
}

/// Reads a duration written with its unit: `"100ms"`, `"30s"`, `"1h 30m"`
/// (`"0"` is zero).
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{e}: write a duration with its unit, such as \"100ms\", \"30s\" or \"24h\"")
    })
}

/// Reads a size: a number of bytes, or a number with a unit (`"16MiB"`,
/// `"64 GiB"`; `KB`, `MB`, `GB` are powers of 1000, `KiB`, `MiB`, `GiB` of
/// 1024).
pub fn size(text: &str) -> Result<ByteSize, String> {
    text.trim().parse::<ByteSize>().map_err(|e| {
        format!("{e}: write a number of bytes or a size such as \"64KiB\", \"16MiB\" or \"2GiB\"")
    })
}

/// A size as a `usize` (sizes of memory and bodies).
pub fn to_usize(size: ByteSize) -> usize {
    usize::try_from(size.as_u64()).unwrap_or(usize::MAX)
}

/// Makes the config file's values the defaults of `cmd`'s arguments with
/// the same ids, so that a flag or environment variable still wins over
/// the file. The keys used are taken out of `file`; what is left is the
/// caller's (tables, and keys no argument knows). Each value is checked by
/// its argument's own parser first, so a bad one is reported with the
/// file's name and key.
pub fn file_values_as_defaults(
    mut cmd: Command,
    file: &mut toml::Table,
    keys: &[String],
    origin: &str,
) -> Result<Command, String> {
    for key in keys {
        let Some(value) = file.remove(key) else {
            continue;
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key)
            .ok_or_else(|| format!("{key} is not an argument of {}", cmd.get_name()))?
            .clone();
        let text = scalar(&value)
            .ok_or_else(|| format!("{origin}: {key} must be a single value, not {value}"))?;
        if arg.get_action().takes_values() {
            check(&arg, &text).map_err(|e| format!("{origin}: {key} = {value}: {e}"))?;
        } else if !matches!(value, toml::Value::Boolean(_)) {
            return Err(format!("{origin}: {key} = {value}: write true or false"));
        }
        cmd = cmd.mut_arg(key, |a| a.default_value(text));
    }
    Ok(cmd)
}

/// A scalar TOML value as the text a flag would carry.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Runs `arg`'s parser on `text`: clap's message when it refuses.
fn check(arg: &Arg, text: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let flag = format!("--{long}={text}");
    let probe = Command::new("check")
        .no_binary_name(true)
        .arg(arg.clone().env(None).default_value(None).required(false));
    match probe.try_get_matches_from([flag]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // clap names the probe's flag; the caller names the key.
            let reason = first.rsplit_once("': ").map_or(first, |(_, r)| r);
            Err(reason.to_string())
        }
    }
}

/// The rows of a Markdown table of `cmd`'s visible arguments: the flag and
/// file key, the environment variable, the default, and the help text.
/// `file_key` gives an argument's key in the config file (`None`: the
/// argument has none).
pub fn markdown_rows(cmd: &Command, file_key: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            continue;
        };
        if id == "help" || id == "version" {
            continue;
        }
        let flag = match file_key(id) {
            Some(key) => format!("`--{long}` / `{key}`"),
            None => format!("`--{long}`"),
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let mut help = help
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|");
        // A default clap cannot hold (the number of cores, a path under
        // another setting) is written at the end of the help.
        let mut default = arg
            .get_default_values()
            .iter()
            .map(|d| format!("`{}`", d.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(start) = help.rfind(" [default: ").filter(|_| help.ends_with(']')) {
            default = help[start + " [default: ".len()..help.len() - 1].to_string();
            help.truncate(start);
        }
        let default = match default.as_str() {
            // A switch (its `false` default is set when clap builds it).
            "" | "`false`" if !arg.get_action().takes_values() => "off".to_string(),
            "" => "none".to_string(),
            _ => default,
        };
        // clap drops the full stop of a one-sentence help; the table keeps it.
        if !help.is_empty() && !help.ends_with('.') {
            help.push('.');
        }
        out.push_str(&format!("| {flag} | {env} | {default} | {help} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage as the crates write theirs.
    #[derive(clap::Args, Debug)]
    struct Stage {
        /// How long.
        #[arg(long, env = "TALLY_SETTINGS_TEST_WAIT", value_parser = duration, default_value = "2s")]
        wait: Duration,
        /// How much.
        #[arg(long, value_parser = size, default_value = "16MiB")]
        room: ByteSize,
        /// How many.
        #[arg(long, default_value = "4")]
        count: usize,
        /// Whether.
        #[arg(long)]
        open: bool,
    }

    fn parse(file: &str, argv: &[&str]) -> Result<Stage, String> {
        let mut table: toml::Table = toml::from_str(file).unwrap();
        let cmd = Stage::augment_args(Command::new("t").no_binary_name(true));
        let cmd = file_values_as_defaults(cmd, &mut table, &ids::<Stage>(), "f.toml")?;
        assert!(table.is_empty(), "keys left: {table:?}");
        let m = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
        Stage::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_come_from_the_definition_alone() {
        let s: Stage = defaults();
        assert_eq!(s.wait, Duration::from_secs(2));
        assert_eq!(s.room, ByteSize::mib(16));
        assert_eq!(s.count, 4);
        assert!(!s.open);
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let s = parse("wait = \"150ms\"\nroom = 1000\nopen = true", &[]).unwrap();
        assert_eq!(s.wait, Duration::from_millis(150));
        assert_eq!(s.room, ByteSize::b(1000));
        assert_eq!(s.count, 4);
        assert!(s.open);
        let s = parse(
            "wait = \"150ms\"\ncount = 9",
            &["--wait", "1m", "--room", "2 KiB"],
        )
        .unwrap();
        assert_eq!(s.wait, Duration::from_secs(60));
        assert_eq!(s.room, ByteSize::kib(2));
        assert_eq!(s.count, 9);
    }

    #[test]
    fn bad_file_values_name_the_file_and_the_key() {
        let e = parse("wait = \"2 fortnights\"", &[]).unwrap_err();
        assert!(e.starts_with("f.toml: wait = \"2 fortnights\": "), "{e}");
        assert!(e.contains("with its unit"), "{e}");
        let e = parse("room = \"lots\"", &[]).unwrap_err();
        assert!(e.starts_with("f.toml: room = \"lots\": "), "{e}");
        let e = parse("count = -1", &[]).unwrap_err();
        assert!(e.starts_with("f.toml: count = -1: "), "{e}");
        let e = parse("open = \"yes\"", &[]).unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        let e = parse("count = [1]", &[]).unwrap_err();
        assert!(e.contains("single value"), "{e}");
    }

    #[test]
    fn units_read_as_documented() {
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        assert_eq!(duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(duration("30").unwrap_err().contains("with its unit"));
        assert_eq!(size("16777216").unwrap(), ByteSize::mib(16));
        assert_eq!(size("64 GiB").unwrap(), ByteSize::gib(64));
        assert_eq!(size("1MB").unwrap(), ByteSize::b(1_000_000));
        assert!(size("-3").is_err());
    }

    #[test]
    fn the_table_shows_flag_key_env_default_and_help() {
        let cmd = Stage::augment_args(Command::new("t"));
        let rows = markdown_rows(&cmd, |id| Some(id.to_string()));
        assert!(
            rows.contains("| `--wait` / `wait` | `TALLY_SETTINGS_TEST_WAIT` | `2s` | How long. |"),
            "{rows}"
        );
        assert!(
            rows.contains("| `--open` / `open` |  | off | Whether. |"),
            "{rows}"
        );
    }
}
