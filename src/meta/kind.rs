//! The kinds of Meta token tokenwarden keeps alive (`kind` on a `[[token]]`), and what each
//! kind means in plain facts: which host answers for it, how its "does it work" read looks,
//! how it is renewed, whether Meta offers a revoke, and the words an email uses to tell a
//! person what to do. Pure: the client ([`crate::graph`]) makes the calls, the config picks
//! the kind, `alert` and `doctor` read the words.
//!
//! `whatsapp` is the default and today's behaviour (WhatsApp Cloud API system-user tokens on
//! graph.facebook.com). `instagram` is a token of the Instagram API with Instagram Login
//! (graph.instagram.com), `threads` one of the Threads API (graph.threads.net): neither can
//! be inspected with Graph's `debug_token`, so their expiry is what Meta said in `expires_in`
//! when tokenwarden last refreshed them (`docs/meta-contract.md`, "Token kinds").

use serde::{Deserialize, Serialize};

/// Meta's Graph host, where `whatsapp` tokens are inspected and used.
pub const GRAPH_HOST: &str = "graph.facebook.com";
/// The Instagram API with Instagram Login's host.
pub const INSTAGRAM_HOST: &str = "graph.instagram.com";
/// The Threads API's host.
pub const THREADS_HOST: &str = "graph.threads.net";

/// How old an Instagram or Threads token must be before Meta refreshes it ("at least 24 hours
/// old but has not expired", both products' long-lived token pages).
pub const MIN_AGE_TO_REFRESH_SECS: i64 = 24 * 3600;

/// How long a long-lived Instagram or Threads token lives from its exchange or refresh: 60
/// days ([IG refresh] and [Threads tokens] in `docs/meta-contract.md`). An expiry given by hand
/// on `import` that lies further out is refused as a mistake.
pub const LONG_LIVED_SECS: i64 = 60 * 86_400;

/// What a token is for, and so how tokenwarden inspects, proves and renews it. A closed
/// list: a kind tokenwarden does not know is a config error, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A WhatsApp Cloud API token (system user or user) on graph.facebook.com: inspected
    /// with `debug_token`, proven by reading the phone number and WABA.
    #[default]
    Whatsapp,
    /// An Instagram User token of the Instagram API with Instagram Login.
    Instagram,
    /// A Threads user token.
    Threads,
    /// A Facebook Page token (Pages API, the Messenger Platform, Instagram through Facebook
    /// Login) on graph.facebook.com: inspected with `debug_token` (`type: PAGE`), proven by
    /// reading the Page (and for Messenger its app subscription), renewed by taking the Page
    /// token again from a long-lived user token.
    Page,
    /// A Marketing API token (user, system-user or business token with ads scopes) on
    /// graph.facebook.com: inspected with `debug_token`, proven by `ads_read` or
    /// `ads_management` and each configured ad account answering with a running status,
    /// renewed by the same refresh and mint as WhatsApp tokens.
    Marketing,
    /// A Tech Provider's business integration system-user token of one customer (Embedded
    /// Signup), on graph.facebook.com: inspected with `debug_token`, proven by reading the
    /// customer's WABA's phone numbers, fetched again without the customer through
    /// `POST /{client-business-id}/system_user_access_tokens` with the partner's own token.
    WhatsappBusiness,
}

/// Every kind, in the order the config error lists them.
pub const ALL: [Kind; 6] = [
    Kind::Whatsapp,
    Kind::Instagram,
    Kind::Threads,
    Kind::Page,
    Kind::Marketing,
    Kind::WhatsappBusiness,
];

/// The Marketing API scopes, one of which a `marketing` token needs.
pub const ADS_SCOPES: [&str; 2] = ["ads_read", "ads_management"];

/// The ad account `account_status` values of a running account: 1 ACTIVE, 8
/// PENDING_SETTLEMENT, 9 IN_GRACE_PERIOD. Any other (2 DISABLED, 3 UNSETTLED, 7
/// PENDING_RISK_REVIEW, 100 PENDING_CLOSURE, 101 CLOSED, ...) is the account's own trouble.
pub const RUNNING_AD_ACCOUNT: [i64; 3] = [1, 8, 9];

impl Kind {
    /// The word in the config, `check`, `status`, `/metrics` and the logs.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Whatsapp => "whatsapp",
            Kind::Instagram => "instagram",
            Kind::Threads => "threads",
            Kind::Page => "page",
            Kind::Marketing => "marketing",
            Kind::WhatsappBusiness => "whatsapp_business",
        }
    }

    /// The product a person knows the token by, in emails: "the {product} token".
    pub fn product(self) -> &'static str {
        match self {
            Kind::Whatsapp | Kind::WhatsappBusiness => "WhatsApp",
            Kind::Instagram => "Instagram",
            Kind::Threads => "Threads",
            Kind::Page => "Facebook Page",
            Kind::Marketing => "Marketing API",
        }
    }

    /// What stops working when the token dies, in emails.
    pub fn what_fails(self) -> &'static str {
        match self {
            Kind::Whatsapp | Kind::WhatsappBusiness => "WhatsApp messages sent with it fail",
            Kind::Instagram => "Instagram API calls made with it fail",
            Kind::Threads => "Threads API calls made with it fail",
            Kind::Page => "Page and Messenger calls made with it fail",
            Kind::Marketing => "ads calls and reports made with it fail",
        }
    }

    /// The kind named `word` in a config file.
    pub fn from_word(word: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.word() == word)
    }

    /// The host Meta answers this kind's calls on.
    pub fn host(self) -> &'static str {
        match self {
            Kind::Whatsapp | Kind::Page | Kind::Marketing | Kind::WhatsappBusiness => GRAPH_HOST,
            Kind::Instagram => INSTAGRAM_HOST,
            Kind::Threads => THREADS_HOST,
        }
    }

    /// Whether Graph's `debug_token` inspects this kind. Meta documents it for neither
    /// Instagram Login tokens nor (without a tester's token) Threads tokens, so their expiry
    /// is recorded from `expires_in` instead.
    pub fn debug_token(self) -> bool {
        matches!(
            self,
            Kind::Whatsapp | Kind::Page | Kind::Marketing | Kind::WhatsappBusiness
        )
    }

    /// The `type` tokenwarden records for a token of this kind that `debug_token` does not
    /// inspect (and that a successor must have).
    pub fn token_type(self) -> Option<&'static str> {
        match self {
            Kind::Whatsapp | Kind::Marketing | Kind::WhatsappBusiness => None,
            Kind::Page => Some("PAGE"),
            Kind::Instagram => Some("INSTAGRAM"),
            Kind::Threads => Some("THREADS"),
        }
    }

    /// The `grant_type` of this kind's `GET /refresh_access_token`, or `None` where renewal
    /// is Graph's own refresh or mint.
    pub fn refresh_grant(self) -> Option<&'static str> {
        match self {
            Kind::Whatsapp | Kind::Page | Kind::Marketing | Kind::WhatsappBusiness => None,
            Kind::Instagram => Some("ig_refresh_token"),
            Kind::Threads => Some("th_refresh_token"),
        }
    }

    /// The `grant_type` of this kind's `GET /access_token` exchange of a short-lived token
    /// for a long-lived one (with the product app's `client_secret`), or `None`.
    pub fn exchange_grant(self) -> Option<&'static str> {
        match self {
            Kind::Whatsapp | Kind::Page | Kind::Marketing | Kind::WhatsappBusiness => None,
            Kind::Instagram => Some("ig_exchange_token"),
            Kind::Threads => Some("th_exchange_token"),
        }
    }

    /// The `fields` of this kind's cheap read with the token (`GET /me`), or `None` where
    /// the proof is the WhatsApp reads.
    pub fn me_fields(self) -> Option<&'static str> {
        match self {
            Kind::Whatsapp | Kind::Page | Kind::Marketing | Kind::WhatsappBusiness => None,
            Kind::Instagram => Some("user_id,username"),
            Kind::Threads => Some("id,username"),
        }
    }

    /// Whether Meta offers a call that revokes a token of this kind. Neither Instagram
    /// Login nor Threads documents one, nor is one documented for Page tokens (they die with
    /// the user token they were taken from): the old token lives on.
    pub fn revocable(self) -> bool {
        matches!(self, Kind::Whatsapp | Kind::Marketing)
    }

    /// Whether an unusable token of this kind starts a rotation. Not for Marketing (a missing
    /// ads scope or a stopped ad account is not fixed by a successor) nor for a business token
    /// (a customer who removed the app is not reconnected by fetching the token again).
    pub fn rotates_when_unusable(self) -> bool {
        !matches!(self, Kind::Marketing | Kind::WhatsappBusiness)
    }

    /// Whether the rotation period (`max_age`, 60 days by default) applies to this kind unless
    /// the token (or its group) sets one. Not for a Page token nor a Tech Provider's business
    /// token: both never expire, and while one works only a person can replace it (Meta hands
    /// the same business token back to `fetch_only`; a Page token is taken from a person's
    /// login), so a period would only warn, daily, about what tokenwarden cannot do. They are
    /// renewed when they stop working.
    pub fn rotation_period_by_default(self) -> bool {
        !matches!(self, Kind::Page | Kind::WhatsappBusiness)
    }

    /// Whether the token is about a WhatsApp Business Account (`phone_number_id` and
    /// `waba_id` have a meaning for it).
    pub fn whatsapp_ids(self) -> bool {
        matches!(self, Kind::Whatsapp | Kind::WhatsappBusiness)
    }

    /// Whether a token of this kind is renewed by Graph's own refresh and mint (WhatsApp,
    /// Marketing), so `source = "mint"` and the WhatsApp-era rules apply.
    pub fn graph_renewal(self) -> bool {
        matches!(self, Kind::Whatsapp | Kind::Marketing)
    }

    /// The kind a token value belongs to by the prefix Meta gives each product's tokens
    /// (`EAA` Graph, `IG` Instagram Login, `TH` Threads: [field], see `docs/meta-contract.md`),
    /// or `None` when the prefix says nothing. Only used to name a token given to the wrong
    /// host after Meta refused it, never to decide that a token is good.
    pub fn of_value(value: &str) -> Option<Kind> {
        // Graph tokens (WhatsApp, Page) share the prefix: the host is what `of_value` names.
        if value.starts_with("EAA") {
            Some(Kind::Whatsapp)
        } else if value.starts_with("IG") {
            Some(Kind::Instagram)
        } else if value.starts_with("TH") {
            Some(Kind::Threads)
        } else {
            None
        }
    }

    /// The sentence for a token of `value_kind` that Meta refused on this kind's host (code
    /// 190 "Cannot parse access token"): the token was given to the wrong host.
    pub fn wrong_host(self, value_kind: Kind) -> String {
        let or_page = if value_kind.host() == GRAPH_HOST {
            " (or \"page\" for a Page token)"
        } else {
            ""
        };
        format!(
            "this is {} token, which {} cannot parse: it was given to the wrong host; set kind = \"{}\"{or_page} on the token (its calls then go to {})",
            value_kind.article_name(),
            self.host(),
            value_kind.word(),
            value_kind.host()
        )
    }

    fn article_name(self) -> &'static str {
        match self {
            Kind::Whatsapp | Kind::Page | Kind::Marketing | Kind::WhatsappBusiness => {
                "a Facebook Graph (WhatsApp, Page or Marketing)"
            }
            Kind::Instagram => "an Instagram Login",
            Kind::Threads => "a Threads",
        }
    }

    /// What an email tells a person about this kind: what to do when the token cannot be
    /// renewed by tokenwarden, where to log in again, and the dashboard to visit.
    pub fn advice(self) -> Advice {
        match self {
            Kind::Whatsapp => Advice {
                product: "WhatsApp Cloud API",
                relogin: "generate a new system-user token in Meta Business Suite (Business settings > Users > System users > Generate new token) with whatsapp_business_management and whatsapp_business_messaging, then stage it",
                relogin_url: "https://business.facebook.com/settings/system-users",
                dashboard: "https://developers.facebook.com/apps/ (your app > WhatsApp > API Setup)",
                renews: "tokenwarden renews it through the configured source (staged, refresh or mint)",
            },
            Kind::Instagram => Advice {
                product: "Instagram API with Instagram Login",
                relogin: "an expired or invalidated Instagram token cannot be refreshed: the Instagram account's owner must log in again (Business Login for Instagram, or the App Dashboard's Instagram > API setup with Instagram business login > Generate token), then stage the new long-lived token",
                relogin_url: "https://www.instagram.com/oauth/authorize",
                dashboard: "https://developers.facebook.com/apps/ (your app > Instagram > API setup with Instagram business login)",
                renews: "tokenwarden refreshes it on graph.instagram.com (ig_refresh_token) once it is at least 24 hours old and long before it expires",
            },
            Kind::WhatsappBusiness => Advice {
                product: "WhatsApp Cloud API (a Tech Provider's business token of one customer)",
                relogin: "if the customer removed the app or disconnected the WABA, only the customer can reconnect it (Embedded Signup again); otherwise check the partner token in `business.partner_token` (an admin system user of the Tech Provider's business) and fetch the business token again with `tokenwarden rotate`",
                relogin_url: "https://business.facebook.com/settings/system-users",
                dashboard: "https://developers.facebook.com/apps/ (your app > WhatsApp > Partner Solutions / Embedded Signup)",
                renews: "tokenwarden fetches the customer's business token again through POST /{client-business-id}/system_user_access_tokens (fetch_only) with the partner's own token",
            },
            Kind::Marketing => Advice {
                product: "Marketing API",
                relogin: "generate a new token with ads_read or ads_management (a system user in Business settings > Users > System users > Generate new token, assigned to the ad accounts), then stage it; a disabled or closed ad account is fixed in Ads Manager, not with a new token",
                relogin_url: "https://business.facebook.com/settings/system-users",
                dashboard: "https://adsmanager.facebook.com/ (Account overview) and https://business.facebook.com/settings/ad-accounts",
                renews: "tokenwarden renews it through the configured source (staged, refresh or mint), never trading a non-expiring token for a 60-day one",
            },
            Kind::Page => Advice {
                product: "Facebook Page (Pages API, Messenger)",
                relogin: "a Page token dies with the person's session it was taken from (a password change, a lost Page role, 90 days without the app in use): a person with a task on the Page must log in again with Facebook Login, make a new long-lived user token and put it where the token's `page.user_token` points (or stage a new Page token)",
                relogin_url: "https://www.facebook.com/dialog/oauth",
                dashboard: "https://business.facebook.com/settings/pages (the Page's people and the app's access)",
                renews: "tokenwarden takes the Page token again from the configured long-lived user token (GET /{page-id}?fields=access_token) well before data access lapses",
            },
            Kind::Threads => Advice {
                product: "Threads API",
                relogin: "an expired or invalidated Threads token cannot be refreshed: the Threads account's owner must authorize the app again (threads.net/oauth/authorize, then exchange the code and th_exchange_token for a long-lived token), then stage it",
                relogin_url: "https://threads.net/oauth/authorize",
                dashboard: "https://developers.facebook.com/apps/ (your app > Use cases > Access the Threads API)",
                renews: "tokenwarden refreshes it on graph.threads.net (th_refresh_token) once it is at least 24 hours old and long before it expires",
            },
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// The per-kind words of an email (see [`Kind::advice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// The product, as Meta names it.
    pub product: &'static str,
    /// What a person does when only a new login or a new token helps.
    pub relogin: &'static str,
    /// Where that login starts.
    pub relogin_url: &'static str,
    /// The dashboard page that shows the token's app settings.
    pub dashboard: &'static str,
    /// How tokenwarden renews the kind on its own.
    pub renews: &'static str,
}

impl Advice {
    /// One paragraph for an email's "what to do" part of a token that needs a person.
    pub fn what_to_do(&self) -> String {
        format!(
            "This is a {} token. {}. Log in at {}; the app's settings are at {}.",
            self.product, self.relogin, self.relogin_url, self.dashboard
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_word_and_serde() {
        for k in ALL {
            assert_eq!(Kind::from_word(k.word()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.word()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), k);
        }
        assert_eq!(Kind::default(), Kind::Whatsapp);
        assert_eq!(Kind::from_word("ads"), None);
        assert!(serde_json::from_str::<Kind>("\"Instagram\"").is_err());
    }

    #[test]
    fn only_whatsapp_is_inspected_with_debug_token_and_revoked() {
        assert!(Kind::Whatsapp.debug_token() && Kind::Whatsapp.revocable());
        assert!(Kind::Page.debug_token() && !Kind::Page.revocable());
        assert_eq!(Kind::Page.host(), GRAPH_HOST);
        for k in [Kind::Instagram, Kind::Threads] {
            assert!(!k.debug_token() && !k.revocable());
            assert!(k.refresh_grant().is_some() && k.me_fields().is_some());
        }
        assert_eq!(Kind::Instagram.refresh_grant(), Some("ig_refresh_token"));
        assert_eq!(Kind::Threads.refresh_grant(), Some("th_refresh_token"));
        assert_eq!(Kind::Instagram.me_fields(), Some("user_id,username"));
        assert_eq!(Kind::Threads.me_fields(), Some("id,username"));
    }

    #[test]
    fn a_value_is_placed_by_its_prefix_and_the_wrong_host_is_named() {
        assert_eq!(Kind::of_value("EAAB12"), Some(Kind::Whatsapp));
        assert_eq!(Kind::of_value("IGAAx"), Some(Kind::Instagram));
        assert_eq!(Kind::of_value("THAAx"), Some(Kind::Threads));
        assert_eq!(Kind::of_value("abc"), None);
        let s = Kind::Whatsapp.wrong_host(Kind::Instagram);
        assert!(s.contains("graph.facebook.com") && s.contains("kind = \"instagram\""));
        assert!(s.contains("wrong host"));
    }

    #[test]
    fn each_kind_tells_a_person_where_to_log_in_again() {
        let ig = Kind::Instagram.advice().what_to_do();
        assert!(ig.contains("Instagram") && ig.contains("log in again"));
        assert!(ig.contains("https://www.instagram.com/oauth/authorize"));
        let th = Kind::Threads.advice().what_to_do();
        assert!(th.contains("threads.net/oauth/authorize"));
        assert!(
            Kind::Whatsapp
                .advice()
                .what_to_do()
                .contains("System users")
        );
    }
}
