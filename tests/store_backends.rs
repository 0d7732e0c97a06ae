//! The store and the queue's state machine against both databases: each scenario runs on
//! a fresh SQLite file and on a fresh PostgreSQL database (`WARMSTART_TEST_POSTGRES_URL`;
//! required when `CI=true`). Covers the migrations, the rows of every table, pagination,
//! atomic claims under contention, leases (heartbeat, expiry, a stale worker's refused
//! finish, cancel seen through the heartbeat) and the start-up errors.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use warmstart::backbones::Modality;
use warmstart::datasets::Task;
use warmstart::datasets::task::TargetSummary;
use warmstart::jobs::lease::{Beat, LeaseTimes};
use warmstart::jobs::webhook::Webhooks;
use warmstart::jobs::{JobSpec, Queue};
use warmstart::store::datasets::DatasetRecord;
use warmstart::store::jobs::JobStatus;
use warmstart::store::models::ModelRecord;
use warmstart::store::{Backend, Db, PageRequest, StoreError, now};
use warmstart::train::BackboneChoice;

/// A database under test and what keeps it alive.
struct TestDb {
    db: Db,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn databases() -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
    let mut out = vec![TestDb {
        db: Db::connect(&url).await.expect("sqlite opens"),
        url,
        _dir: Some(dir),
    }];
    if let Some(url) = common::postgres::fresh_database().await {
        out.push(TestDb {
            db: Db::connect(&url).await.expect("postgres opens"),
            url,
            _dir: None,
        });
    }
    out
}

fn dataset(id: &str, tenant: &str) -> DatasetRecord {
    DatasetRecord {
        id: id.into(),
        name: format!("{id}.csv"),
        modality: Modality::Text,
        num_examples: 4,
        labels: vec!["a".into(), "b".into()],
        label_counts: [("a".to_string(), 2), ("b".to_string(), 2)].into(),
        warnings: vec![],
        format: "csv".into(),
        created_at: now(),
        tenant: tenant.into(),
        task: Task::Regression,
        target_summary: Some(TargetSummary::of(&[1.0, 2.5, 4.0])),
    }
}

fn model(id: &str, job_id: &str) -> ModelRecord {
    ModelRecord {
        id: id.into(),
        job_id: job_id.into(),
        dataset_id: "d1".into(),
        backbone: "minilm-l6".into(),
        modality: Modality::Text,
        labels: vec!["a".into(), "b".into()],
        metrics: json!({"accuracy": 1.0}),
        created_at: now(),
        tenant: "t".into(),
        task: Task::Multilabel,
    }
}

fn queue(db: &Db, lease_ms: u64) -> Queue {
    let times = LeaseTimes {
        lease: Duration::from_millis(lease_ms),
        heartbeat: Duration::from_millis(lease_ms / 3),
    };
    Queue::new(db.clone(), Webhooks::new(None, false), times)
}

async fn enqueue(q: &Queue, dataset_id: &str) -> String {
    let spec: JobSpec = serde_json::from_value(json!({"dataset_id": dataset_id})).unwrap();
    let backbone = BackboneChoice {
        id: "minilm-l6".into(),
        reason: None,
    };
    q.enqueue("t", &spec, &backbone).await.unwrap().unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_and_pages_read_back_the_same_on_both_backends() {
    for t in databases().await {
        let db = &t.db;
        for i in 0..5 {
            db.insert_dataset(&dataset(&format!("d{i}"), "t"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        db.insert_dataset(&dataset("other", "u")).await.unwrap();
        let got = db.get_dataset("t", "d1").await.unwrap().unwrap();
        assert_eq!(got.label_counts["a"], 2, "{:?}", db.backend);
        assert_eq!(got.task, Task::Regression, "{:?}", db.backend);
        assert_eq!(got.target_summary.as_ref().map(|t| t.max), Some(4.0));
        assert!(db.get_dataset("u", "d1").await.unwrap().is_none());

        let first = PageRequest {
            limit: 2,
            after: None,
        };
        let p1 = db.list_datasets("t", &first).await.unwrap().unwrap();
        let ids: Vec<_> = p1.data.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d4", "d3"], "{:?}", db.backend);
        assert!(p1.has_more);
        let next = PageRequest {
            limit: 10,
            after: Some("d3".into()),
        };
        let p2 = db.list_datasets("t", &next).await.unwrap().unwrap();
        let ids: Vec<_> = p2.data.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d2", "d1", "d0"]);
        assert!(!p2.has_more);
        let foreign = PageRequest {
            limit: 10,
            after: Some("other".into()),
        };
        assert!(db.list_datasets("t", &foreign).await.unwrap().is_none());

        db.insert_model(&model("m1", "j1")).await.unwrap();
        let m = db.get_model("t", "m1").await.unwrap().unwrap();
        assert_eq!(m.metrics["accuracy"], 1.0);
        assert_eq!(
            db.latest_model_for_dataset("t", "d1")
                .await
                .unwrap()
                .unwrap()
                .id,
            "m1"
        );
        let m1 = db
            .latest_model_for_dataset("t", "d1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m1.task, Task::Multilabel, "{:?}", db.backend);
        assert!(db.delete_model("t", "m1").await.unwrap());

        assert!(!db.any_keys().await.unwrap());
        let (key, secret) = db.create_key("ci", None).await.unwrap();
        assert!(db.any_keys().await.unwrap());
        let grant = db.verify_key(&secret).await.unwrap().unwrap();
        assert_eq!(grant.tenant, "ci");
        assert!(db.revoke_key(&key.id).await.unwrap());
        assert!(db.verify_key(&secret).await.unwrap().is_none());
        assert_eq!(db.list_keys().await.unwrap().len(), 1);

        // A dataset in use by a queued job is not deleted; afterwards it is.
        let q = queue(db, 30_000);
        let job = enqueue(&q, "d0").await;
        assert!(!db.delete_dataset("t", "d0").await.unwrap());
        q.cancel("t", &job).await.unwrap();
        assert!(db.delete_dataset("t", "d0").await.unwrap());
        let events = db.job_events(&job, 0).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["queued", "cancelled"]);
        let page = db.job_events_page(&job, None, 1).await.unwrap();
        assert_eq!(page.data[0].kind.as_str(), "cancelled");
        assert!(page.has_more);
        let counts = db.job_status_counts().await.unwrap();
        assert_eq!(counts, [("cancelled".to_string(), 1)]);
        // Opening again applies nothing new.
        Db::connect(&t.url).await.expect("reopens");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_take_each_job_exactly_once() {
    for t in databases().await {
        let db = &t.db;
        db.insert_dataset(&dataset("d", "t")).await.unwrap();
        let q = queue(db, 30_000);
        let mut all = HashSet::new();
        for _ in 0..20 {
            all.insert(enqueue(&q, "d").await);
        }
        let claimers = (0..6).map(|w| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some((job, _lease)) = q.claim_next(&format!("w{w}")).await.unwrap() {
                    mine.push(job.id);
                }
                mine
            })
        });
        let mut claimed = Vec::new();
        for c in claimers {
            claimed.extend(c.await.unwrap());
        }
        assert_eq!(claimed.len(), 20, "{:?}: {claimed:?}", db.backend);
        assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_requeues_the_job_and_the_stale_worker_cannot_finish_it() {
    for t in databases().await {
        let db = &t.db;
        db.insert_dataset(&dataset("d", "t")).await.unwrap();
        let q = queue(db, 600);
        let id = enqueue(&q, "d").await;
        let (_, stale) = q.claim_next("w1").await.unwrap().unwrap();
        assert_eq!(q.heartbeat(&stale).await.unwrap(), Beat::Held);
        // Held leases are not taken back.
        assert_eq!(q.expire_leases().await.unwrap(), (0, 0));
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(q.expire_leases().await.unwrap(), (1, 0), "{:?}", db.backend);
        // A second live host finds nothing more to take back.
        assert_eq!(q.expire_leases().await.unwrap(), (0, 0));
        let job = db.get_job("t", &id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued);

        let (again, fresh) = q.claim_next("w2").await.unwrap().unwrap();
        assert_eq!(again.id, id);
        assert_eq!(again.attempts, 2);
        assert_eq!(q.heartbeat(&stale).await.unwrap(), Beat::Lost);
        assert!(!q.succeed(&stale, &model("m-stale", &id)).await.unwrap());
        q.fail(&stale, warmstart::error_code::Code::Internal, "stale")
            .await
            .unwrap();
        assert!(q.succeed(&fresh, &model("m-fresh", &id)).await.unwrap());
        let job = db.get_job("t", &id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Succeeded);
        assert_eq!(job.model_id.as_deref(), Some("m-fresh"));
        assert!(db.get_model("t", "m-stale").await.unwrap().is_none());
        let kinds: Vec<_> = db.job_events(&id, 0).await.unwrap();
        let kinds: Vec<_> = kinds.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["queued", "started", "requeued", "started", "succeeded"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_losing_its_worker_fails_and_a_cancel_reaches_the_heartbeat() {
    for t in databases().await {
        let db = &t.db;
        db.insert_dataset(&dataset("d", "t")).await.unwrap();
        let q = queue(db, 300);
        let id = enqueue(&q, "d").await;
        for attempt in 1..=3 {
            let (job, _) = q.claim_next("w").await.unwrap().unwrap();
            assert_eq!(job.attempts, attempt);
            tokio::time::sleep(Duration::from_millis(450)).await;
            let expected = if attempt < 3 { (1, 0) } else { (0, 1) };
            assert_eq!(q.expire_leases().await.unwrap(), expected);
        }
        let job = db.get_job("t", &id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error.unwrap().code, "interrupted");

        let id = enqueue(&q, "d").await;
        let (_, lease) = q.claim_next("w").await.unwrap().unwrap();
        q.cancel("t", &id).await.unwrap();
        assert_eq!(q.heartbeat(&lease).await.unwrap(), Beat::Cancelled);
        assert!(!q.succeed(&lease, &model("m", &id)).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_say_what_is_wrong() {
    let err = Db::connect("mysql://u:secret@h/db").await.unwrap_err();
    assert!(matches!(err, StoreError::BadUrl(_)), "{err}");
    assert!(!err.to_string().contains("secret"));

    let began = Instant::now();
    let err = Db::connect("postgres://u:pw@127.0.0.1:1/db")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(began.elapsed() < Duration::from_secs(15));

    for t in databases().await {
        // A migration this binary does not know: a newer version migrated the database.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', TRUE, $1, 0)",
        )
        .bind(vec![0u8; 48])
        .execute(&t.db.pool)
        .await
        .unwrap();
        let err = Db::connect(&t.url).await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
            "{:?}: {err}",
            t.db.backend
        );
        assert!(err.to_string().contains("newer than this binary"), "{err}");
        assert!(matches!(t.db.backend, Backend::Sqlite | Backend::Postgres));
    }
}
