//! Logging on standard error: readable lines (coloured only on a terminal, never with
//! `NO_COLOR`), syslog priorities under journald, or JSON.

use std::io::IsTerminal;

/// The `--log-format` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines (with syslog priorities under journald)
    Human,
    /// One JSON object per line
    Json,
}

/// Human lines on a terminal; JSON with `--log-format json`. Under journald (`$JOURNAL_STREAM`)
/// human lines carry a `<N>` syslog priority prefix, so `journalctl -p warning` works.
/// `TOKENWARDEN_LOG` sets the filter (default `tokenwarden=info,warn`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKENWARDEN_LOG")
        .unwrap_or_else(|_| "tokenwarden=info,warn".into());
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human if std::env::var_os("JOURNAL_STREAM").is_some() => builder
            .without_time()
            .with_ansi(false)
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .init(),
        LogFormat::Human => builder.init(),
    }
}

/// Whether log lines may carry colour: only when standard error is a terminal (a file, a pipe
/// or the journal would keep the escape codes as text), and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Prefixes each line with its syslog priority for journald (sd-daemon(3)).
struct JournalFormat<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{prio}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(colour(true, Some(OsStr::new(""))));
    }
}
