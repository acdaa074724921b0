//! Fleet mode's engine against a real PostgreSQL (a private cluster the test starts): the
//! versioned schema, the fleet's identity, and the fleet log: gap-free and in commit order
//! under concurrent writers, chained like a local log, a changed record refused.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use credstore::fleet::{Appended, Fleet, FleetError, SCHEMA_VERSION};
use credstore::log::genesis_hash;

const STORE: [u8; 16] = *b"fleet-test-store";

#[test]
fn init_creates_the_schema_once_for_one_store() {
    let Some(server) = pg::PgServer::start() else { return };
    let fleet = Fleet::connect(&server.url()).expect("connect");
    assert!(matches!(fleet.info(), Err(FleetError::NotAFleet)));

    let info = fleet.init(STORE).expect("init");
    assert_eq!(info.schema_version, SCHEMA_VERSION);
    assert_eq!((info.head_seq, info.head_hash), (0, genesis_hash(&STORE)));
    // Again: nothing changes; the migrations are not applied twice.
    assert_eq!(fleet.init(STORE).expect("init again"), info);
    assert_eq!(fleet.migrate().expect("migrate"), SCHEMA_VERSION);
    // Another store cannot take it over.
    assert!(matches!(fleet.init(*b"another-store-id"), Err(FleetError::OtherStore)));
}

#[test]
fn concurrent_writers_append_gap_free_in_one_chain() {
    let Some(server) = pg::PgServer::start() else { return };
    Fleet::connect(&server.url())
        .expect("connect")
        .init(STORE)
        .expect("init");
    const WRITERS: usize = 4;
    const EACH: usize = 50;
    let url = server.url();
    let conflicts: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let url = url.clone();
                scope.spawn(move || {
                    let fleet = Fleet::connect(&url).expect("connect");
                    let mut conflicts = 0;
                    for i in 0..EACH {
                        let payload = vec![format!("writer {w} record {i}").into_bytes()];
                        loop {
                            let head = fleet.info().expect("info");
                            match fleet
                                .append(head.head_seq, head.head_hash, &payload, &format!("host-{w}"))
                                .expect("append")
                            {
                                Appended::Committed { .. } => break,
                                Appended::Conflict => conflicts += 1,
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer")).sum()
    });

    let fleet = Fleet::connect(&url).expect("connect");
    let info = fleet.info().expect("info");
    assert_eq!(info.head_seq, (WRITERS * EACH) as u64, "{conflicts} conflicts retried");
    let records = fleet.records_after(0, genesis_hash(&STORE), 10_000).expect("read");
    assert_eq!(records.len(), WRITERS * EACH);
    assert_eq!(records.last().map(|r| r.hash), Some(info.head_hash));
    for w in 0..WRITERS {
        let mine: Vec<_> = records.iter().filter(|r| r.host == format!("host-{w}")).collect();
        assert_eq!(mine.len(), EACH, "writer {w}");
        // Each writer's records are in its own order.
        for (i, r) in mine.iter().enumerate() {
            assert_eq!(r.payload, format!("writer {w} record {i}").into_bytes());
        }
    }
    // A batch of several records in one append, and a stale head refused.
    let batch = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
    let appended = fleet
        .append(info.head_seq, info.head_hash, &batch, "cli")
        .expect("append");
    assert!(matches!(appended, Appended::Committed { seq, .. } if seq == info.head_seq + 3));
    assert_eq!(
        fleet
            .append(info.head_seq, info.head_hash, &batch, "cli")
            .expect("append"),
        Appended::Conflict
    );
}

#[test]
fn a_record_changed_in_the_database_does_not_chain() {
    let Some(server) = pg::PgServer::start() else { return };
    let fleet = Fleet::connect(&server.url()).expect("connect");
    let info = fleet.init(STORE).expect("init");
    let payloads: Vec<Vec<u8>> = (0..5).map(|i| vec![i]).collect();
    fleet
        .append(info.head_seq, info.head_hash, &payloads, "host")
        .expect("append");
    assert_eq!(
        fleet.records_after(0, genesis_hash(&STORE), 100).expect("read").len(),
        5
    );

    let mut client = postgres_client(&server.url());
    client("update credstore_log set payload = '\\x09' where seq = 3");
    let read = fleet.records_after(0, genesis_hash(&STORE), 100);
    assert!(matches!(read, Err(FleetError::BadChain { seq: 3, .. })), "{read:?}");
    client("delete from credstore_log where seq = 3");
    let read = fleet.records_after(0, genesis_hash(&STORE), 100);
    assert!(matches!(read, Err(FleetError::BadChain { seq: 3, .. })), "{read:?}");
}

/// Runs SQL as the test's own client, outside the engine.
fn postgres_client(url: &str) -> impl FnMut(&str) + use<> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = url.to_string();
    move |sql: &str| {
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let task = tokio::spawn(connection);
            client.batch_execute(sql).await.expect("sql");
            drop(client);
            let _ = task.await;
        });
    }
}

#[test]
fn the_cli_makes_a_fleet_and_reports_its_status() {
    let Some(server) = pg::PgServer::start() else { return };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_credstore"))
            .arg("--fleet")
            .arg(server.url())
            .args(args)
            .env_remove("CREDSTORE_DATA")
            .env_remove("CREDSTORE_PEPPER")
            .output()
            .expect("run credstore");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["init"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("schema version {SCHEMA_VERSION}")), "{stdout}");
    // A second init keeps the fleet's identity.
    let (_, again, _) = run(&["init"]);
    assert_eq!(again, stdout);

    let fleet = Fleet::connect(&server.url()).expect("connect");
    let info = fleet.info().expect("info");
    fleet.heartbeat("host-a", 0, 1).expect("heartbeat");
    let payloads = vec![b"x".to_vec(), b"y".to_vec()];
    fleet.append(0, info.head_hash, &payloads, "host-a").expect("append");
    let (code, status, stderr) = run(&["status"]);
    assert_eq!(code, Some(0), "{status}{stderr}");
    assert!(status.contains("head at record 2"), "{status}");
    assert!(
        status.contains("host host-a (serving): applied record 0 (lag 2)"),
        "{status}"
    );

    // Commands that open a store need the fleet's shared pepper.
    let (code, _, stderr) = run(&["list"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("CREDSTORE_PEPPER"), "{stderr}");
}
