//! The host's imports, with conveniences on top.

use crate::bindings::sonde::collector::host::Level;
use std::str::FromStr;

/// Logs `message` under the plugin's name.
///
/// The host rate-limits plugin logs: lines past the plugin's budget are
/// dropped, long lines are cut. Outside wasm (native unit tests) the line goes
/// to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    crate::bindings::sonde::collector::host::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    eprintln!("[{level:?}] {message}");
}

/// The value of `key` in the plugin's `[plugin.config]` table of the
/// operator's manifest, if set. Outside wasm (native unit tests) always
/// `None`.
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_family = "wasm")]
    return crate::bindings::sonde::collector::host::config(key);
    #[cfg(not(target_family = "wasm"))]
    {
        let _ = key;
        None
    }
}

/// The config value `key` parsed as `T`, or `default` if unset.
///
/// A value that does not parse (after trimming) also yields `default`, and
/// logs a warning naming the key, the value and the default.
pub fn config_parse<T>(key: &str, default: T) -> T
where
    T: FromStr + std::fmt::Display,
{
    let Some(raw) = config(key) else {
        return default;
    };
    match raw.trim().parse() {
        Ok(v) => v,
        Err(_) => {
            log(
                Level::Warn,
                &format!("config `{key}` = {raw:?} is invalid; using the default {default}"),
            );
            default
        }
    }
}

/// The config value `key` as a comma-separated list (see [`parse_list`]);
/// `None` if unset.
pub fn config_list(key: &str) -> Option<Vec<String>> {
    config(key).map(|v| parse_list(&v))
}

/// Splits `value` at commas, trims each item and drops empty ones.
///
/// ```
/// assert_eq!(sonde_sdk::parse_list(" /a, /b/{id} ,,"), ["/a", "/b/{id}"]);
/// ```
pub fn parse_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Logs a formatted line at [`Level::Error`](crate::Level::Error).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Error, &$crate::__private::format!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Warn`](crate::Level::Warn).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Warn, &$crate::__private::format!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Info`](crate::Level::Info).
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Info, &$crate::__private::format!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Debug`](crate::Level::Debug).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Debug, &$crate::__private::format!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_trimmed_and_compact() {
        assert_eq!(parse_list(""), Vec::<String>::new());
        assert_eq!(parse_list(" , ,"), Vec::<String>::new());
        assert_eq!(
            parse_list("/users/{id},/orders , /health"),
            ["/users/{id}", "/orders", "/health"]
        );
    }

    #[test]
    fn unset_config_yields_default_natively() {
        assert_eq!(config("top_n"), None);
        assert_eq!(config_parse("top_n", 10usize), 10);
        assert_eq!(config_list("routes"), None);
        crate::warn!("native log goes to stderr: {}", 1);
    }
}
