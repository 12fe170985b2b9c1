//! The simulated Graph endpoints, one file per endpoint family, with Meta's error envelopes,
//! headers and the quirks of reference section 8. This file only routes: a request gets its
//! latency and in-flight count, its fault, then goes to a batch or to one endpoint, and leaves
//! with the common headers. What an endpoint answers lives in its family's file:
//!
//! - `envelope.rs`: [`Reply`], the error envelope `GraphError`, the refusals several families
//!   share, the headers every answer carries;
//! - `call.rs`: [`Call`], a request parsed (path, version prefix, query, form, JSON, bearer);
//! - `auth.rs`: who is calling: app tokens, `appsecret_proof`, `client_id`/`client_secret`, the
//!   envelope of an expired or killed token;
//! - `tokens.rs`: `debug_token`, `oauth/access_token` (refresh), `oauth/revoke`, minting, and
//!   the quirks that change them;
//! - `whatsapp.rs`: phone-number and WABA reads, `phone_numbers`, `messages`, the business
//!   throttle quirk;
//! - `kinds.rs`: the Instagram and Threads hosts (`/instagram/...`, `/threads/...`): `me` and
//!   `refresh_access_token`, `access_token` (the exchange), and Threads' app access token
//!   (`oauth/access_token`, `client_credentials`);
//! - `business.rs`: a Tech Provider's customers' business tokens (`system_user_access_tokens`);
//! - `ads.rs`: ad accounts (`act_{id}`) and their `account_status`;
//! - `pages.rs`: the demo Page: its read, taking its Page token, its subscribed apps;
//! - `batch.rs`: `POST /` with `batch`, and how an item inherits the top-level token;
//! - `faults.rs`: the injected [`Fault`](super::Fault)s, latency and the in-flight count.
//!
//! The world they read and change (clock, tokens, counters) is `super::world`; the admin API
//! that sets it up is `super::admin`, not here.

mod ads;
mod auth;
mod batch;
mod business;
mod call;
mod envelope;
mod faults;
mod kinds;
mod pages;
mod tokens;
mod whatsapp;

pub(super) use call::Call;

use super::fault::Endpoint;
use super::world::{Shared, World, lock};
use envelope::{GraphError, Reply};
use faults::{InFlight, Pre};

/// Routes one non-batch call.
fn dispatch(w: &mut World, call: &Call) -> Reply {
    if call.host != call::Host::Graph {
        return kinds::dispatch(w, call).unwrap_or_else(|e| e.into_reply(w));
    }
    if business::is_business_tokens(call) {
        return business::fetch(w, call).unwrap_or_else(|e| e.into_reply(w));
    }
    if ads::is_ad_account(call) {
        return ads::read(w, call).unwrap_or_else(|e| e.into_reply(w));
    }
    if pages::is_page(call) {
        return pages::dispatch(w, call).unwrap_or_else(|e| e.into_reply(w));
    }
    let result = match call.endpoint() {
        Endpoint::DebugToken => tokens::debug_token(w, call),
        Endpoint::Refresh => tokens::refresh(w, call),
        Endpoint::Revoke => tokens::revoke(w, call),
        Endpoint::Mint => tokens::mint(w, call),
        Endpoint::PhoneNumbers => whatsapp::phone_numbers(w, call),
        Endpoint::Messages => whatsapp::messages(w, call),
        Endpoint::Phone => whatsapp::read_object(w, call),
        Endpoint::Batch => Err(GraphError::new(
            100,
            "(#100) A batch cannot contain a batch",
        )),
        Endpoint::Any
        | Endpoint::Other
        | Endpoint::Me
        | Endpoint::RefreshAccessToken
        | Endpoint::ExchangeToken
        | Endpoint::ThreadsAppToken => Err(GraphError::new(
            2500,
            format!("Unknown path components: /{}", call.segments.join("/")),
        )),
    };
    result.unwrap_or_else(|e| e.into_reply(w))
}

/// Evaluates one call (no batch) with faults applied.
async fn handle_one(shared: &Shared, call: &Call) -> Reply {
    match faults::pre(shared, call.endpoint()).await {
        Pre::Answer(r) => r,
        Pre::Echo(code) => faults::echo(&mut lock(shared), call, code),
        Pre::Normal => dispatch(&mut lock(shared), call),
        Pre::Truncate => faults::truncate(dispatch(&mut lock(shared), call)),
    }
}

/// Answers a Graph request: latency (once per HTTP request, so a batch of 50 costs one round
/// trip), faults, batch or single call, then the common headers.
pub(super) async fn handle(shared: &Shared, call: Call) -> Reply {
    let _in_flight = InFlight::enter(shared);
    faults::latency(shared).await;
    let reply = if call.endpoint() == Endpoint::Batch {
        match faults::pre(shared, Endpoint::Batch).await {
            Pre::Answer(r) => r,
            Pre::Echo(code) => faults::echo(&mut lock(shared), &call, code),
            Pre::Normal => batch::batch(shared, &call).await,
            Pre::Truncate => faults::truncate(batch::batch(shared, &call).await),
        }
    } else {
        handle_one(shared, &call).await
    };
    envelope::finish(shared, reply)
}
