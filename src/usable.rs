//! Whether a token can do the WhatsApp job: the one rule, used by the daemon's check,
//! `doctor` and the validation of a rotation's candidate alike. Pure: it judges what
//! `debug_token` said and what [`GraphClient::prove`](crate::graph::GraphClient::prove) read;
//! it makes no call itself.
//!
//! The rule, in order (`docs/meta-contract.md` gives the sources):
//! 1. **Scopes**: both `whatsapp_business_management` and `whatsapp_business_messaging`.
//! 2. **The WABA** (when `waba_id` is configured): when `debug_token` lists `target_ids` for
//!    the WhatsApp scopes, the WABA must be among them. When it lists none, which Meta does
//!    for a permission granted in general (its own `SYSTEM_USER` example; an admin system
//!    user reaches every WABA of the business), debug_token cannot decide: a read of the
//!    WABA with the token does. Only a refused read makes the token unusable.
//! 3. **The phone number** (when configured): a read with the token must succeed.
//!
//! A read that fails transiently leaves the answer unknown, never "unusable"; a read answered
//! with code 190 means the token is dead, whatever `debug_token` said.

use crate::meta::WHATSAPP_SCOPES;
use crate::meta::error::{ApiError, GraphError, Transient};
use crate::meta::token::{Proof, TokenInfo};

/// How the WABA check was decided, for `doctor` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WabaFinding {
    /// No `waba_id` configured.
    NotConfigured,
    /// Among the WhatsApp scopes' `target_ids`.
    AmongTargets,
    /// `debug_token` lists no targets (granted in general), and reading the WABA succeeded.
    ReadSucceeded,
    /// `target_ids` are listed and the WABA is not among them; `reaches` are the listed ones.
    NotAmongTargets {
        /// The WABAs the token's targets list.
        reaches: Vec<String>,
    },
    /// No targets listed, and reading the WABA with the token failed with this error.
    ReadFailed(GraphError),
    /// No targets listed and no read was made (a caller's bug, or the scopes failed first).
    NotRead,
}

/// The verdict of the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usability {
    /// The token can send messages from the configured number.
    Usable,
    /// It cannot, and only a person (or a new token) fixes it: the reason in words.
    Unusable(String),
    /// A read with the token said it is dead (code 190).
    Dead(ApiError),
    /// A read failed transiently: nothing is known; ask again later.
    Unknown(String),
    /// A read was throttled by Meta: nothing is known; ask again when access returns
    /// (`retry_after`, Meta's `estimated_time_to_regain_access`, when it said).
    Throttled {
        /// How long Meta said access takes to return.
        retry_after: Option<std::time::Duration>,
        /// Meta's answer.
        detail: String,
    },
    /// A read was refused because of tokenwarden's own app credentials.
    OwnCredentials(String),
}

/// The WhatsApp scopes missing from `scopes`.
pub fn missing_scopes(scopes: &[String]) -> Vec<&'static str> {
    WHATSAPP_SCOPES
        .into_iter()
        .filter(|s| !scopes.iter().any(|x| x == s))
        .collect()
}

/// The WABA part of the rule.
pub fn waba_finding(info: &TokenInfo, waba_id: Option<&str>, proof: &Proof) -> WabaFinding {
    let Some(waba) = waba_id else {
        return WabaFinding::NotConfigured;
    };
    match info.waba_targets() {
        Some(ids) if ids.iter().any(|t| t == waba) => WabaFinding::AmongTargets,
        Some(reaches) => WabaFinding::NotAmongTargets { reaches },
        None => match &proof.waba {
            Some(Ok(())) => WabaFinding::ReadSucceeded,
            Some(Err(e)) => WabaFinding::ReadFailed(e.clone()),
            None => WabaFinding::NotRead,
        },
    }
}

/// Judges a token Meta did not call invalid: scopes, then the WABA, then the phone number.
/// `waba_id` and `phone_number_id` are the configured ids.
pub fn decide(
    info: &TokenInfo,
    waba_id: Option<&str>,
    phone_number_id: Option<&str>,
    proof: &Proof,
) -> Usability {
    let missing = missing_scopes(&info.scopes);
    if !missing.is_empty() {
        return Usability::Unusable(format!("the token lacks {}", missing.join(" and ")));
    }
    let waba = waba_id.unwrap_or_default();
    match waba_finding(info, waba_id, proof) {
        WabaFinding::NotConfigured | WabaFinding::AmongTargets | WabaFinding::ReadSucceeded => {}
        WabaFinding::NotAmongTargets { .. } => {
            return Usability::Unusable(format!(
                "WhatsApp Business Account {waba} is not among the token's targets"
            ));
        }
        WabaFinding::ReadFailed(e) => {
            return read_failure(&format!("reading WhatsApp Business Account {waba}"), e);
        }
        WabaFinding::NotRead => {
            return Usability::Unknown(format!(
                "debug_token lists no targets and WhatsApp Business Account {waba} was not read"
            ));
        }
    }
    match (&proof.phone, phone_number_id) {
        (Some(Err(e)), Some(p)) => read_failure(&format!("reading phone number {p}"), e.clone()),
        (None, Some(p)) => Usability::Unknown(format!("phone number {p} was not read")),
        _ => Usability::Usable,
    }
}

/// Messenger's policy refusals (code 10 outside the messaging window, #230): about what the
/// Page may do, never about the token.
const POLICY_CODES: [i64; 2] = [10, 230];

/// Judges a Page token Meta did not call invalid, for `page_id` (and Messenger when
/// `messenger`): the token's type and Page as `debug_token` reports them (absent = unknown),
/// then the read of the Page, then the Page's subscription to the app. A policy refusal
/// (codes 10 and 230) leaves the answer unknown, never unusable.
pub fn decide_page(info: &TokenInfo, page_id: &str, messenger: bool, proof: &Proof) -> Usability {
    if let Some(t) = info.token_type.as_deref().filter(|t| *t != "PAGE") {
        return Usability::Unusable(format!(
            "this is a {t} token, not a Page token: take the Page token with GET /{page_id}?fields=access_token"
        ));
    }
    if let Some(p) = info.profile_id.as_deref().filter(|p| *p != page_id) {
        return Usability::Unusable(format!("the token is for Page {p}, not Page {page_id}"));
    }
    let policy = |what: &str, e: GraphError| match e {
        GraphError::Misconfigured(api) if POLICY_CODES.contains(&api.code) => Usability::Unknown(
            format!("{what}: a policy refusal, not a token problem: {api}"),
        ),
        e => read_failure(what, e),
    };
    match &proof.page {
        None => return Usability::Unknown(format!("Page {page_id} was not read")),
        Some(Err(e)) => return policy(&format!("reading Page {page_id}"), e.clone()),
        Some(Ok(())) => {}
    }
    if messenger {
        match &proof.subscribed {
            None => {
                return Usability::Unknown(format!("Page {page_id}'s subscription was not read"));
            }
            Some(Err(e)) => {
                return policy(
                    &format!("reading Page {page_id}'s subscribed apps"),
                    e.clone(),
                );
            }
            Some(Ok(false)) => {
                return Usability::Unusable(format!(
                    "Page {page_id} is not subscribed to the app: Messenger delivers none of its messages (POST /{page_id}/subscribed_apps with the Page token)"
                ));
            }
            Some(Ok(true)) => {}
        }
    }
    Usability::Usable
}

/// Judges a Marketing API token Meta did not call invalid: `ads_read` or `ads_management`
/// granted, then each configured ad account read with a running status
/// ([`crate::meta::kind::RUNNING_AD_ACCOUNT`]). A disabled or closed account is named as the
/// account's trouble, not the token's (the token is unusable for it, and a new token would not
/// help: `rotation::start_reason` does not rotate a Marketing token for it).
pub fn decide_marketing(info: &TokenInfo, proof: &Proof) -> Usability {
    use crate::meta::kind::{ADS_SCOPES, RUNNING_AD_ACCOUNT};
    if !ADS_SCOPES.iter().any(|s| info.has_scope(s)) {
        return Usability::Unusable("the token lacks ads_read and ads_management".into());
    }
    for (id, read) in &proof.ad_accounts {
        match read {
            Ok(status) if RUNNING_AD_ACCOUNT.contains(status) => {}
            Ok(status) => {
                return Usability::Unusable(format!(
                    "ad account act_{id} is not running (account_status {status}): the account's own trouble, not the token's; see Ads Manager"
                ));
            }
            Err(e) => return read_failure(&format!("reading ad account act_{id}"), e.clone()),
        }
    }
    Usability::Usable
}

/// Judges a Tech Provider's business token of one customer that Meta did not call invalid:
/// both WhatsApp scopes, then the read of the customer's WABA's phone numbers. Code 200 on the
/// WABA means the customer removed the app or the WABA's access: "disconnected by the
/// customer", which a new token does not fix (`rotation::start_reason` does not rotate it).
/// No WABA id (a group's member whose secret lacks the tag) cannot be proven: unusable, the
/// missing tag named, rather than a read of an empty id.
pub fn decide_business(info: &TokenInfo, waba_id: Option<&str>, proof: &Proof) -> Usability {
    let Some(waba_id) = waba_id else {
        return Usability::Unusable(format!(
            "no WhatsApp Business Account id to prove the business token with: tag its secret `{}` with the customer's WABA id",
            crate::config::TAG_WABA
        ));
    };
    let missing = missing_scopes(&info.scopes);
    if !missing.is_empty() {
        return Usability::Unusable(format!("the token lacks {}", missing.join(" and ")));
    }
    match &proof.waba_numbers {
        None => Usability::Unknown(format!(
            "WhatsApp Business Account {waba_id}'s phone numbers were not read"
        )),
        Some(Ok(_)) => Usability::Usable,
        Some(Err(GraphError::Misconfigured(api))) if (200..=299).contains(&api.code) => {
            Usability::Unusable(format!(
                "disconnected by the customer: WhatsApp Business Account {waba_id} refused the business token ({api}); the customer removed the app or its access, and only the customer can reconnect it"
            ))
        }
        Some(Err(e)) => read_failure(
            &format!("reading WhatsApp Business Account {waba_id}'s phone numbers"),
            e.clone(),
        ),
    }
}

/// What a failed read means: refused is unusable, 190 is dead, transient is unknown.
fn read_failure(what: &str, e: GraphError) -> Usability {
    match e {
        GraphError::TokenDead(api) => Usability::Dead(api),
        GraphError::Misconfigured(api) => Usability::Unusable(format!("{what} failed: {api}")),
        GraphError::OwnCredentials(api) => Usability::OwnCredentials(api.to_string()),
        GraphError::Transient(Transient::RateLimited { api, retry_after }) => {
            Usability::Throttled {
                retry_after,
                detail: format!("{what}: rate limited: {api}"),
            }
        }
        GraphError::Transient(t) => Usability::Unknown(format!("{what}: {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Expiry, GranularScope, PhoneNumber};

    #[test]
    fn a_business_token_is_judged_by_its_scopes_and_its_customers_phone_numbers() {
        let wa = info(&WHATSAPP_SCOPES, None);
        let proof = |r: Option<Result<usize, GraphError>>| Proof {
            waba_numbers: r,
            ..Proof::default()
        };
        assert_eq!(
            decide_business(&wa, Some(WABA), &proof(Some(Ok(1)))),
            Usability::Usable
        );
        let gone = decide_business(
            &wa,
            Some(WABA),
            &proof(Some(Err(GraphError::Misconfigured(api(200))))),
        );
        assert!(
            matches!(gone, Usability::Unusable(ref w) if w.starts_with("disconnected by the customer")),
            "{gone:?}"
        );
        let wrong_id = decide_business(
            &wa,
            Some(WABA),
            &proof(Some(Err(GraphError::Misconfigured(api(100))))),
        );
        assert!(
            matches!(wrong_id, Usability::Unusable(ref w) if !w.contains("disconnected")),
            "{wrong_id:?}"
        );
        assert!(matches!(
            decide_business(&wa, Some(WABA), &proof(None)),
            Usability::Unknown(_)
        ));
        let no_scopes = info(&["ads_read"], None);
        assert!(
            matches!(decide_business(&no_scopes, Some(WABA), &proof(Some(Ok(1)))), Usability::Unusable(ref w) if w.contains("lacks"))
        );
        // A group's member whose secret has no WABA tag: nothing was read, and the verdict
        // names the tag (it read the empty id and said only that the read failed).
        assert!(
            matches!(decide_business(&wa, None, &proof(None)), Usability::Unusable(ref w) if w.contains("`tokenwarden:waba_id`")),
            "{:?}",
            decide_business(&wa, None, &proof(None))
        );
    }

    #[test]
    fn a_marketing_token_needs_an_ads_scope_and_running_ad_accounts() {
        let proof = |reads: Vec<(&str, Result<i64, GraphError>)>| Proof {
            ad_accounts: reads.into_iter().map(|(i, r)| (i.to_string(), r)).collect(),
            ..Proof::default()
        };
        let ads = info(&["ads_read"], None);
        assert_eq!(decide_marketing(&ads, &proof(vec![])), Usability::Usable);
        for running in [1, 8, 9] {
            assert_eq!(
                decide_marketing(&ads, &proof(vec![("1", Ok(running))])),
                Usability::Usable
            );
        }
        for stopped in [2, 3, 7, 100, 101] {
            let u = decide_marketing(&ads, &proof(vec![("1", Ok(1)), ("2", Ok(stopped))]));
            assert!(
                matches!(u, Usability::Unusable(ref w) if w.contains("act_2") && w.contains("not the token's")),
                "{stopped}: {u:?}"
            );
        }
        let no_ads = info(&["whatsapp_business_messaging"], None);
        assert!(
            matches!(decide_marketing(&no_ads, &proof(vec![])), Usability::Unusable(ref w) if w.contains("ads_read"))
        );
        let dead = decide_marketing(
            &ads,
            &proof(vec![("1", Err(GraphError::TokenDead(api(190))))]),
        );
        assert!(matches!(dead, Usability::Dead(_)));
    }

    #[test]
    fn a_page_token_is_judged_by_its_type_page_read_and_subscription() {
        const PAGE: &str = "110000000000001";
        let mut info = info(&[], None);
        info.token_type = Some("PAGE".into());
        info.profile_id = Some(PAGE.into());
        let proof = |page: Option<Result<(), GraphError>>,
                     sub: Option<Result<bool, GraphError>>| Proof {
            page,
            subscribed: sub,
            ..Proof::default()
        };
        let ok = proof(Some(Ok(())), Some(Ok(true)));
        assert_eq!(decide_page(&info, PAGE, true, &ok), Usability::Usable);
        assert_eq!(
            decide_page(&info, PAGE, false, &proof(Some(Ok(())), None)),
            Usability::Usable
        );
        let other = decide_page(&info, "2", false, &ok);
        assert!(
            matches!(other, Usability::Unusable(ref w) if w.contains("Page 110000000000001")),
            "{other:?}"
        );
        let unsub = decide_page(&info, PAGE, true, &proof(Some(Ok(())), Some(Ok(false))));
        assert!(
            matches!(unsub, Usability::Unusable(ref w) if w.contains("not subscribed")),
            "{unsub:?}"
        );
        let lost = decide_page(
            &info,
            PAGE,
            false,
            &proof(Some(Err(GraphError::Misconfigured(api(200)))), None),
        );
        assert!(
            matches!(lost, Usability::Unusable(_)),
            "a lost Page role: {lost:?}"
        );
        for code in [10, 230] {
            let p = decide_page(
                &info,
                PAGE,
                false,
                &proof(Some(Err(GraphError::Misconfigured(api(code)))), None),
            );
            assert!(
                matches!(p, Usability::Unknown(ref w) if w.contains("policy")),
                "{code}: {p:?}"
            );
        }
        let dead = decide_page(
            &info,
            PAGE,
            false,
            &proof(Some(Err(GraphError::TokenDead(api(190)))), None),
        );
        assert!(matches!(dead, Usability::Dead(_)));
        let mut su = info.clone();
        su.token_type = Some("SYSTEM_USER".into());
        assert!(
            matches!(decide_page(&su, PAGE, false, &ok), Usability::Unusable(ref w) if w.contains("not a Page token"))
        );
    }

    const WABA: &str = "102290129340398";
    const PHONE: &str = "106540352242922";

    fn api(code: i64) -> ApiError {
        ApiError {
            status: 400,
            code,
            subcode: None,
            kind: None,
            message: format!("(#{code}) refused"),
            details: None,
            fbtrace_id: None,
        }
    }

    /// A valid token with `scopes`; `targets`: `None` = no `target_ids`, `Some(ids)` = listed.
    fn info(scopes: &[&str], targets: Option<&[&str]>) -> TokenInfo {
        TokenInfo {
            is_valid: Some(true),
            app_id: Some("634974688087057".into()),
            token_type: Some("SYSTEM_USER".into()),
            application: None,
            expires_at: Expiry::Never,
            data_access_expires_at: None,
            issued_at: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            granular_scopes: scopes
                .iter()
                .map(|s| GranularScope {
                    scope: s.to_string(),
                    target_ids: targets
                        .unwrap_or_default()
                        .iter()
                        .map(|t| t.to_string())
                        .collect(),
                })
                .collect(),
            user_id: None,
            profile_id: None,
            error: None,
        }
    }

    fn phone_ok() -> Option<Result<PhoneNumber, GraphError>> {
        Some(Ok(PhoneNumber {
            id: PHONE.into(),
            display_phone_number: None,
            verified_name: None,
            quality_rating: None,
            code_verification_status: None,
            name_status: None,
        }))
    }

    /// The table of issue 13, point 3: scopes present/absent, `target_ids`
    /// present/absent/another WABA, WABA and phone reads ok/refused/unknown.
    #[test]
    fn one_rule_for_every_combination() {
        let both = &WHATSAPP_SCOPES[..];
        let one = &WHATSAPP_SCOPES[..1];
        let refused = || Some(Err(GraphError::Misconfigured(api(200))));
        let unknown = || Some(Err(GraphError::Transient(Transient::Timeout)));
        let dead = || Some(Err(GraphError::TokenDead(api(190))));
        type Row = (
            &'static str,
            TokenInfo,
            Option<Result<(), GraphError>>,
            Option<Result<PhoneNumber, GraphError>>,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (
                "targets list the WABA",
                info(both, Some(&[WABA])),
                None,
                phone_ok(),
                "usable",
            ),
            (
                "targets list the WABA among others",
                info(both, Some(&["1", WABA])),
                None,
                phone_ok(),
                "usable",
            ),
            (
                "targets list another WABA",
                info(both, Some(&["1"])),
                None,
                phone_ok(),
                "unusable",
            ),
            (
                "no targets, WABA read ok",
                info(both, None),
                Some(Ok(())),
                phone_ok(),
                "usable",
            ),
            (
                "no targets, WABA read refused",
                info(both, None),
                refused(),
                phone_ok(),
                "unusable",
            ),
            (
                "no targets, WABA read unknown",
                info(both, None),
                unknown(),
                phone_ok(),
                "unknown",
            ),
            (
                "no targets, WABA not read",
                info(both, None),
                None,
                phone_ok(),
                "unknown",
            ),
            (
                "no targets, WABA read says dead",
                info(both, None),
                dead(),
                phone_ok(),
                "dead",
            ),
            (
                "one scope missing",
                info(one, Some(&[WABA])),
                None,
                phone_ok(),
                "unusable",
            ),
            (
                "one scope missing, no targets",
                info(one, None),
                Some(Ok(())),
                phone_ok(),
                "unusable",
            ),
            (
                "no scopes",
                info(&[], None),
                Some(Ok(())),
                phone_ok(),
                "unusable",
            ),
            (
                "phone refused",
                info(both, Some(&[WABA])),
                None,
                refused_phone(),
                "unusable",
            ),
            (
                "phone unknown",
                info(both, Some(&[WABA])),
                None,
                unknown_phone(),
                "unknown",
            ),
            (
                "phone says dead",
                info(both, None),
                Some(Ok(())),
                dead_phone(),
                "dead",
            ),
            (
                "phone not read",
                info(both, Some(&[WABA])),
                None,
                None,
                "unknown",
            ),
        ];
        for (name, info, waba, phone, want) in rows {
            let proof = Proof {
                waba,
                phone,
                ..Proof::default()
            };
            let got = match decide(&info, Some(WABA), Some(PHONE), &proof) {
                Usability::Usable => "usable",
                Usability::Unusable(_) => "unusable",
                Usability::Dead(_) => "dead",
                Usability::Unknown(_) | Usability::Throttled { .. } => "unknown",
                Usability::OwnCredentials(_) => "own",
            };
            assert_eq!(got, want, "{name}");
        }
    }

    fn refused_phone() -> Option<Result<PhoneNumber, GraphError>> {
        Some(Err(GraphError::Misconfigured(api(100))))
    }
    fn unknown_phone() -> Option<Result<PhoneNumber, GraphError>> {
        Some(Err(GraphError::Transient(Transient::Timeout)))
    }
    fn dead_phone() -> Option<Result<PhoneNumber, GraphError>> {
        Some(Err(GraphError::TokenDead(api(190))))
    }

    #[test]
    fn nothing_configured_needs_only_the_scopes() {
        let proof = Proof::default();
        let i = info(&WHATSAPP_SCOPES, None);
        assert_eq!(decide(&i, None, None, &proof), Usability::Usable);
        assert_eq!(waba_finding(&i, None, &proof), WabaFinding::NotConfigured);
    }

    #[test]
    fn targets_on_one_scope_only_mean_the_other_was_granted_in_general() {
        let mut i = info(&WHATSAPP_SCOPES, Some(&[WABA]));
        i.granular_scopes[1].target_ids.clear();
        assert_eq!(
            i.waba_targets(),
            None,
            "one scope without targets: read to decide"
        );
        let proof = Proof {
            waba: Some(Ok(())),
            phone: phone_ok(),
            ..Proof::default()
        };
        assert_eq!(
            waba_finding(&i, Some(WABA), &proof),
            WabaFinding::ReadSucceeded
        );
        assert_eq!(
            decide(&i, Some(WABA), Some(PHONE), &proof),
            Usability::Usable
        );
    }
}
