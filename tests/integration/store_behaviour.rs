//! The write side of both stores, one behaviour suite run against each: the file store in a
//! temporary directory and the `aws` store against moto's Secrets Manager.
//!
//! Every test runs the same steps on a fresh store of each kind, so the two stores keep the
//! same staging-label semantics that rotation relies on.

use std::os::unix::fs::PermissionsExt;

use tokenwarden::secret::Secret;
use tokenwarden::store::aws::AwsStore;
use tokenwarden::store::file::FileStore;
use tokenwarden::store::{SecretStore, Store, StoreError, VersionId};

use crate::util::{assert_no_leak, moto_client, moto_create, moto_sdk_config, unique};

const INITIAL: &str = "EAAGinitialToken111";
const RT_A: &str = "0a0a0a0a-1111-4111-8111-000000000001";
const RT_B: &str = "0b0b0b0b-2222-4222-8222-000000000002";

/// A fresh store of one kind holding `INITIAL` as its only (current) version.
struct Fixture {
    kind: &'static str,
    store: Store,
    /// The file store's directory, removed on drop.
    dir: Option<tempfile::TempDir>,
    /// The aws store's secret name.
    secret_id: String,
}

impl Fixture {
    async fn file() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileStore::new(dir.path().join("tokens.json"), "prod".into());
        fs.import_current(&Secret::new(INITIAL), jiff::Timestamp::now())
            .unwrap();
        Fixture {
            kind: "file",
            store: Store::File(fs),
            dir: Some(dir),
            secret_id: String::new(),
        }
    }

    async fn aws_with(body: &str, json_key: Option<&str>) -> Fixture {
        let id = unique("behaviour");
        moto_create(&id, body).await;
        Fixture {
            kind: "aws",
            store: Store::Aws(AwsStore::from_sdk_config(
                &moto_sdk_config().await,
                &id,
                json_key.map(str::to_string),
            )),
            dir: None,
            secret_id: id,
        }
    }

    /// One fresh store of each kind.
    async fn each() -> Vec<Fixture> {
        vec![
            Fixture::file().await,
            Fixture::aws_with(INITIAL, None).await,
        ]
    }

    /// A second handle on the same store, as another tokenwarden process would have.
    async fn other_writer(&self) -> Store {
        match &self.store {
            Store::File(fs) => Store::File(FileStore::new(fs.path().to_path_buf(), "prod".into())),
            Store::Aws(_) => Store::Aws(AwsStore::from_sdk_config(
                &moto_sdk_config().await,
                &self.secret_id,
                None,
            )),
        }
    }

    /// Every version that has labels, as (id, sorted labels), sorted by id.
    async fn labels(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = match &self.store {
            Store::File(fs) => fs
                .read()
                .unwrap()
                .secrets
                .remove("prod")
                .unwrap()
                .versions
                .into_iter()
                .map(|v| (v.id, v.stages))
                .collect(),
            Store::Aws(_) => moto_client()
                .await
                .list_secret_version_ids()
                .secret_id(&self.secret_id)
                .send()
                .await
                .unwrap()
                .versions()
                .iter()
                .map(|v| {
                    (
                        v.version_id().unwrap().to_string(),
                        v.version_stages().to_vec(),
                    )
                })
                .collect(),
        };
        for (_, stages) in &mut out {
            stages.sort();
        }
        out.retain(|(_, stages)| !stages.is_empty());
        out.sort();
        out
    }

    /// How many versions the store holds, labelled or not.
    async fn version_count(&self) -> usize {
        match &self.store {
            Store::File(fs) => fs.read().unwrap().secrets["prod"].versions.len(),
            Store::Aws(_) => moto_client()
                .await
                .list_secret_version_ids()
                .secret_id(&self.secret_id)
                .include_deprecated(true)
                .send()
                .await
                .unwrap()
                .versions()
                .len(),
        }
    }

    async fn stages_of(&self, id: &VersionId) -> Vec<String> {
        self.labels()
            .await
            .into_iter()
            .find(|(v, _)| *v == id.0)
            .map(|(_, s)| s)
            .unwrap_or_default()
    }
}

fn secret(v: &str) -> Secret {
    Secret::new(v)
}

#[tokio::test]
async fn staging_leaves_the_current_token_alone_and_is_idempotent() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let (c0, _) = fx.store.current_version().await.unwrap();
        assert!(fx.store.pending().await.unwrap().is_none(), "{k}");

        let a = fx
            .store
            .put_pending(&secret("EAAGcandidateA"), RT_A)
            .await
            .unwrap();
        let (p, v) = fx.store.pending().await.unwrap().expect(k);
        assert_eq!(
            (p.clone(), v.expose()),
            (a.clone(), "EAAGcandidateA"),
            "{k}"
        );
        let (c, v) = fx.store.current_version().await.unwrap();
        assert_eq!((c, v.expose()), (c0.clone(), INITIAL), "{k}");
        assert_eq!(fx.store.current().await.unwrap().expose(), INITIAL, "{k}");

        let count = fx.version_count().await;
        let again = fx
            .store
            .put_pending(&secret("EAAGcandidateA"), RT_A)
            .await
            .unwrap();
        assert_eq!(again, a, "{k}: a retry names the same version");
        assert_eq!(
            fx.version_count().await,
            count,
            "{k}: a retry adds no version"
        );

        let e = fx
            .store
            .put_pending(&secret("EAAGcandidateOther"), RT_A)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{k}: {e}");
        assert_no_leak(&e.to_string(), &["EAAGcandidate", INITIAL], k);
        let (_, v) = fx.store.pending().await.unwrap().expect(k);
        assert_eq!(
            v.expose(),
            "EAAGcandidateA",
            "{k}: the conflict changed nothing"
        );

        // A second candidate takes the label over.
        let b = fx
            .store
            .put_pending(&secret("EAAGcandidateB"), RT_B)
            .await
            .unwrap();
        let (p, v) = fx.store.pending().await.unwrap().expect(k);
        assert_eq!((p, v.expose()), (b, "EAAGcandidateB"), "{k}");
        assert!(
            !fx.stages_of(&a).await.contains(&"AWSPENDING".into()),
            "{k}"
        );
    }
}

#[tokio::test]
async fn promote_makes_the_candidate_current_and_labels_the_old_one_previous() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let (c0, _) = fx.store.current_version().await.unwrap();
        let a = fx
            .store
            .put_pending(&secret("EAAGpromoted"), RT_A)
            .await
            .unwrap();
        assert!(fx.store.previous().await.unwrap().is_none(), "{k}");
        fx.store.promote(&a, &c0).await.unwrap();

        let (c, v) = fx.store.current_version().await.unwrap();
        assert_eq!((c, v.expose()), (a.clone(), "EAAGpromoted"), "{k}");
        let (p, pv) = fx.store.previous().await.unwrap().expect("previous kept");
        assert_eq!((p, pv.expose()), (c0.clone(), INITIAL), "{k}");
        assert_eq!(fx.stages_of(&a).await, ["AWSCURRENT"], "{k}");
        assert_eq!(fx.stages_of(&c0).await, ["AWSPREVIOUS"], "{k}");
        assert!(fx.store.pending().await.unwrap().is_none(), "{k}");
    }
}

#[tokio::test]
async fn a_promote_that_lost_the_race_conflicts_and_changes_nothing() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let (c0, _) = fx.store.current_version().await.unwrap();
        let a = fx
            .store
            .put_pending(&secret("EAAGmine"), RT_A)
            .await
            .unwrap();

        // Another writer stages and promotes its own candidate first.
        let other = fx.other_writer().await;
        let b = other
            .put_pending(&secret("EAAGtheirs"), RT_B)
            .await
            .unwrap();
        other.promote(&b, &c0).await.unwrap();
        let before = fx.labels().await;

        let e = fx.store.promote(&a, &c0).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{k}: {e}");
        assert!(e.to_string().contains("re-read"), "{k}: {e}");
        assert_no_leak(&e.to_string(), &["EAAGmine", "EAAGtheirs", INITIAL], k);
        assert_eq!(fx.labels().await, before, "{k}: labels untouched");
        let (c, v) = fx.store.current_version().await.unwrap();
        assert_eq!((c, v.expose()), (b, "EAAGtheirs"), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_promotes_from_the_same_version_exactly_one_wins() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let (c0, _) = fx.store.current_version().await.unwrap();
        let a = fx
            .store
            .put_pending(&secret("EAAGraced"), RT_A)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let s = fx.other_writer().await;
            let (a, c0) = (a.clone(), c0.clone());
            tasks.push(tokio::spawn(async move { s.promote(&a, &c0).await }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("{k}: {e}"),
            }
        }
        assert_eq!(wins, 1, "{k}");
        assert_eq!(fx.stages_of(&c0).await, ["AWSPREVIOUS"], "{k}");
        assert_eq!(fx.stages_of(&a).await, ["AWSCURRENT"], "{k}");
    }
}

#[tokio::test]
async fn rollback_makes_the_previous_token_current_again() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let (c0, _) = fx.store.current_version().await.unwrap();
        let e = fx.store.rollback().await.unwrap_err();
        assert!(
            matches!(e, StoreError::Broken { .. }),
            "{k}: nothing to roll back to: {e}"
        );

        let a = fx
            .store
            .put_pending(&secret("EAAGbad"), RT_A)
            .await
            .unwrap();
        fx.store.promote(&a, &c0).await.unwrap();
        let back = fx.store.rollback().await.unwrap();
        assert_eq!(back, c0, "{k}");
        let (c, v) = fx.store.current_version().await.unwrap();
        assert_eq!((c, v.expose()), (c0.clone(), INITIAL), "{k}");
        assert_eq!(fx.stages_of(&c0).await, ["AWSCURRENT"], "{k}");
        assert_eq!(fx.stages_of(&a).await, ["AWSPREVIOUS"], "{k}");
    }
}

#[tokio::test]
async fn clear_pending_removes_only_the_candidate() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let (c0, _) = fx.store.current_version().await.unwrap();
        fx.store.clear_pending().await.unwrap();
        fx.store
            .put_pending(&secret("EAAGrejected"), RT_A)
            .await
            .unwrap();
        let before: Vec<_> = fx
            .labels()
            .await
            .into_iter()
            .filter(|(_, s)| *s != ["AWSPENDING"])
            .collect();
        fx.store.clear_pending().await.unwrap();
        assert!(fx.store.pending().await.unwrap().is_none(), "{k}");
        assert_eq!(fx.labels().await, before, "{k}");
        let (c, v) = fx.store.current_version().await.unwrap();
        assert_eq!((c, v.expose()), (c0, INITIAL), "{k}");
        fx.store.clear_pending().await.unwrap();
    }
}

/// Issue 14, point 29: a candidate whose `AWSPENDING` another writer moved away is still
/// readable by its version id, so the rotation that made it can revoke it.
#[tokio::test]
async fn a_version_is_found_by_its_id_after_its_label_moved() {
    for fx in Fixture::each().await {
        let k = fx.kind;
        let a = fx
            .store
            .put_pending(&secret("EAAGmineFirst"), RT_A)
            .await
            .unwrap();
        fx.other_writer()
            .await
            .put_pending(&secret("EAAGtheirsSecond"), RT_B)
            .await
            .unwrap();
        let (pending, _) = fx.store.pending().await.unwrap().unwrap();
        assert_ne!(pending, a, "{k}: the label moved");
        let mine = fx.store.version(&a).await.unwrap().expect("still there");
        assert_eq!(mine.expose(), "EAAGmineFirst", "{k}");
        let gone = VersionId("0c0c0c0c-3333-4333-8333-000000000003".into());
        assert!(fx.store.version(&gone).await.unwrap().is_none(), "{k}");
    }
}

#[tokio::test]
async fn aws_json_secret_keeps_its_other_keys_through_a_promote() {
    let body = r#"{"DB_PASSWORD":"pw-keep-1","WHATSAPP_ACCESS_TOKEN":"EAAGjsonOld","n":1.50,"o":{"x":[1, 2]}}"#;
    let fx = Fixture::aws_with(body, Some("WHATSAPP_ACCESS_TOKEN")).await;
    let (c0, v) = fx.store.current_version().await.unwrap();
    assert_eq!(v.expose(), "EAAGjsonOld");
    let a = fx
        .store
        .put_pending(&secret("EAAGjson\"New"), RT_A)
        .await
        .unwrap();
    assert_eq!(
        fx.store.pending().await.unwrap().unwrap().1.expose(),
        "EAAGjson\"New"
    );
    let again = fx
        .store
        .put_pending(&secret("EAAGjson\"New"), RT_A)
        .await
        .unwrap();
    assert_eq!(again, a);
    fx.store.promote(&a, &c0).await.unwrap();
    assert_eq!(fx.store.current().await.unwrap().expose(), "EAAGjson\"New");
    let raw = moto_client()
        .await
        .get_secret_value()
        .secret_id(&fx.secret_id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.secret_string().unwrap(),
        r#"{"DB_PASSWORD":"pw-keep-1","WHATSAPP_ACCESS_TOKEN":"EAAGjson\"New","n":1.50,"o":{"x":[1, 2]}}"#
    );
}

#[tokio::test]
async fn file_store_stays_private_and_never_quotes_a_token() {
    let fx = Fixture::file().await;
    let Store::File(fs) = &fx.store else {
        unreachable!()
    };
    let (c0, _) = fx.store.current_version().await.unwrap();
    let a = fx
        .store
        .put_pending(&secret("EAAGfileA"), RT_A)
        .await
        .unwrap();
    let mut errors = vec![
        fx.store
            .put_pending(&secret("EAAGfileOther"), RT_A)
            .await
            .unwrap_err()
            .to_string(),
        fx.store.promote(&a, &a).await.unwrap_err().to_string(),
        fx.store
            .put_pending(&secret("EAAGfileA"), "short")
            .await
            .unwrap_err()
            .to_string(),
    ];
    fx.store.promote(&a, &c0).await.unwrap();
    errors.push(fx.store.promote(&a, &c0).await.unwrap_err().to_string());
    let mode = std::fs::metadata(fs.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Writers lock the directory: no lock or temp file is left next to the store.
    let names: Vec<_> = std::fs::read_dir(fx.dir.as_ref().unwrap().path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tokens.json"]);
    // A version that lost all labels is dropped from the file, and a missing entry is Missing.
    let text = std::fs::read_to_string(fs.path()).unwrap();
    assert!(!text.contains("EAAGfileOther"));
    let e = FileStore::new(fs.path().to_path_buf(), "absent".into())
        .put_pending(&secret("EAAGfileA"), RT_B)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    errors.push(e.to_string());
    assert_no_leak(
        &errors.join("\n"),
        &["EAAGfileA", "EAAGfileOther", INITIAL],
        "store errors",
    );
}
