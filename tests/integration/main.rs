//! tokenwarden's integration tests: one binary, real components on loopback.
//!
//! Meta is the project's own Graph sandbox, AWS Secrets Manager is moto's server, and commands
//! run through the real `tokenwarden` binary where a user would run them.

/// Shared fixtures: the sandbox and workspaces, SMTP, moto, the binary, metrics, the daemon.
mod util;

/// The AWS Secrets Manager store against moto: reads, versions, missing and unreachable secrets.
mod aws_store;
/// `GraphClient::debug_tokens`: many tokens checked in batches, rate limits item by item.
mod batch;
/// A daemon run with a canary in every secret: no canary reaches any output, file or email.
mod canary;
/// The receivers beside email driven by the daemon: filters, resolve by key, an hour's outage,
/// a failing receiver told on the others, a crash, a real Alertmanager pair, `notify test`,
/// config check, and canaries in every payload, queue and log.
mod channels_daemon;
/// PagerDuty, Slack and Teams payloads against strict stand-ins: limits, refusals, retries,
/// no routing key or webhook URL in any payload or error.
mod channels_payloads;
/// The commands a user types: `config check`, `demo`, `sandbox`, `import`, `check`, log format.
mod cli;
/// The daemon's alerts: thresholds in order each once, recovery, "cannot check", bad app secret.
mod daemon_alerts;
/// Targets synced by the scheduled check, and drift behind tokenwarden's back repaired and emailed.
mod daemon_drift;
/// The daemon as a service: reload (SIGHUP, rebuilt from the new config), SIGKILL and restart,
/// SIGTERM, even mid-check.
mod daemon_lifecycle;
/// `/metrics` for every token and `/healthz` failing while the loop is blocked.
mod daemon_metrics;
/// The outbox: every email once through an SMTP outage, a restart, a day down, a crash per step.
mod daemon_outbox;
/// Scheduled rotation in the daemon: mint at its time, a refused mint, a stop mid-rotation.
mod daemon_rotation;
/// Meta's rate limits and business throttle during the daemon's check: deferred, never dead.
mod daemon_throttling;
/// A rotation delivered to env files, a secret and a webhook, wave by wave; rollback, drift.
mod delivery;
/// `tokenwarden doctor`: each check's mark and advice for every token shape and fault.
mod doctor;
/// Every kind of email opened in headless Chromium: headline and deadline on the first screen.
mod email_render;
/// Faults during a rotation: Secrets Manager throttled then down mid-promotion, a hanging target.
mod faults;
/// The state directory's files: modes under umask, corrupt state, a full disk, stale temp files.
mod files;
/// The fuzz corpora replayed on stable through the same entry points as the fuzz targets.
mod fuzz_corpus;
/// The Graph client: every token shape and fault classified; refresh, mint and revoke calls.
mod graph_client;
/// `[[group]]`: members listed from Secrets Manager, checked in batches, spread by the daemon.
mod groups;
/// Hostile servers: redirects, endless bodies, echoed secrets, proxies, idle floods, paging.
mod hostile;
/// `kind = "whatsapp_business"`: a Tech Provider's customer token fetched again, a disconnect named.
mod kinds_business;
/// `kind = "instagram"`: the Instagram host of the sandbox, and a token kept alive end to end.
mod kinds_instagram;
/// `kind = "marketing"`: a Marketing API token proven by its ad accounts, refreshed as today.
mod kinds_marketing;
/// `kind = "page"`: a Page token proven by its Page, retaken from a user token, its failures.
mod kinds_page;
/// Every kind of token through a season of the daemon: a handful of emails per token.
mod kinds_season;
/// `kind = "threads"`: the Threads host of the sandbox, and a token kept alive end to end.
mod kinds_threads;
/// Meta's documented contract and each quirk real Meta has shown (`docs/meta-contract.md`).
mod meta_contract;
/// The code's shape: no import cycle between `src/`'s top-level modules, a pure core without IO.
mod module_graph;
/// The mailers and the outbox on their own: SMTP, TLS, AUTH, rejections, folder mail, no leak.
mod notify;
/// `deploy/`'s monitoring: the Prometheus rules under `promtool check` and `promtool test rules`,
/// the Grafana dashboard's queries against a real daemon's `/metrics`.
mod observability;
/// Rotation through the binary: `stage`, `rotate`, `rollback` per source and store, crashes, races.
mod rotation;
/// The Graph sandbox itself: every endpoint, fault and quirk behaves as Meta's documentation.
mod sandbox;
/// The systemd unit: verify, sysusers and tmpfiles, READY, watchdog and STOPPING in order.
mod service;
/// The daemon under random faults for a while: memory and file descriptors stay flat.
mod soak;
/// One behaviour suite run against both secret stores (file and AWS).
mod store_behaviour;
/// Each kind of target on its own: webhooks, exec commands, verify URLs and commands.
mod targets;
/// The `github_actions_secret` target against a loopback GitHub that opens each sealed box
/// with PyNaCl: push, rollback, retried sync, refusals, retries, a hang, no leak.
mod targets_github;
/// The `heroku_config_var` target against a loopback Heroku Platform API: push, read back,
/// rollback, drift, refusals, retries, a hang, no leak.
mod targets_heroku;
/// The `kubernetes_secret` target through kube-rs against a loopback API server: push, conflict,
/// rollout restart and wait, a stuck rollout, rollback, drift, refusals, retries, a hang, no leak.
mod targets_kubernetes;
/// The `render_env_var` target against a loopback Render API: push, deploy until live, a failed
/// deploy, rollback, drift, refusals, retries, a hang, no leak.
mod targets_render;
/// The `ssm_parameter` target against moto and a loopback Parameter Store: push, read back,
/// rollback, drift, denied, throttled, hanging.
mod targets_ssm;
/// The `vercel_env` target against a loopback Vercel API: upsert, read back every environment,
/// redeploy, rollback, drift, refusals, retries, a hang, no leak.
mod targets_vercel;
