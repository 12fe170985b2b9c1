//! Turning an [`Email`] into a MIME message: headers that thread, both parts, a Date.

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::{Email, NotifyError};
use crate::secret::Fingerprint;

/// The right-hand side of every Message-ID tokenwarden makes.
const DOMAIN: &str = "tokenwarden";

pub(super) use crate::config::email::parse_mailbox;

/// The sender and the recipients of a mailer's config, parsed (the config check has already
/// said what is wrong with them; this only refuses to build a mailer from them).
pub(super) fn parse_addresses(
    from: &str,
    to: &[String],
) -> Result<(Mailbox, Vec<Mailbox>), NotifyError> {
    let from = parse_mailbox(from).map_err(NotifyError::Config)?;
    let to = to
        .iter()
        .map(|t| parse_mailbox(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(NotifyError::Config)?;
    Ok((from, to))
}

/// `<{id}@tokenwarden>`.
pub(super) fn message_id(id: &str) -> String {
    format!("<{id}@{DOMAIN}>")
}

/// `<thread-{token}@tokenwarden>`: the same for every email about one token, so mail clients
/// show them as one conversation.
///
/// Characters other than `A-Za-z0-9-_` are replaced by `-`; when anything was replaced, the
/// fingerprint of the real name is appended so that `a.b` and `a-b` stay two threads.
pub(super) fn thread_id(token: &str) -> String {
    let clean: String = token
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == token && !token.is_empty() {
        format!("<thread-{clean}@{DOMAIN}>")
    } else {
        format!("<thread-{clean}-{}@{DOMAIN}>", Fingerprint::of(token))
    }
}

/// The full message, ready for SMTP or a `.eml` file.
pub(super) fn build(email: &Email, from: &Mailbox, to: &[Mailbox]) -> Result<Message, NotifyError> {
    let thread = thread_id(&email.token);
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(email.subject.clone())
        .message_id(Some(message_id(&email.id)))
        .in_reply_to(thread.clone())
        .references(thread)
        .date_now();
    for m in to {
        builder = builder.to(m.clone());
    }
    let mut msg = builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| NotifyError::Config(format!("cannot build email {}: {e}", email.id)))?;
    msg.headers_mut().insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("X-Tokenwarden-Token"),
        email.token.clone(),
    ));
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids_are_stable_and_distinct() {
        assert_eq!(thread_id("prod-wa"), "<thread-prod-wa@tokenwarden>");
        assert_eq!(thread_id("prod-wa"), thread_id("prod-wa"));
        assert_ne!(thread_id("a.b"), thread_id("a-b"));
        assert!(thread_id("a.b").starts_with("<thread-a-b-"));
        assert_ne!(thread_id("a.b"), thread_id("a b"));
    }

    #[test]
    fn message_has_threading_headers_and_both_parts() {
        let email = Email {
            id: "expiry-prod-7d".into(),
            token: "prod".into(),
            subject: "Token prod expires in 7 days".into(),
            text: "plain body".into(),
            html: "<p>html body</p>".into(),
        };
        let from = parse_mailbox("tokenwarden <tw@example.com>").unwrap();
        let to = [
            parse_mailbox("a@example.com").unwrap(),
            parse_mailbox("b@example.com").unwrap(),
        ];
        let raw = String::from_utf8(build(&email, &from, &to).unwrap().formatted()).unwrap();
        for needle in [
            "Message-ID: <expiry-prod-7d@tokenwarden>",
            "In-Reply-To: <thread-prod@tokenwarden>",
            "References: <thread-prod@tokenwarden>",
            "X-Tokenwarden-Token: prod",
            "Date: ",
            "multipart/alternative",
            "text/plain",
            "text/html",
        ] {
            assert!(raw.contains(needle), "missing {needle:?} in\n{raw}");
        }
        assert!(raw.find("text/plain").unwrap() < raw.find("text/html").unwrap());
    }

    #[test]
    fn bad_addresses_are_named() {
        let e = parse_mailbox("not an address").unwrap_err();
        assert!(e.contains("not an address"), "{e}");
    }
}
