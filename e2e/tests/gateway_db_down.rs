//! PostgreSQL goes away under a running gateway: it keeps its sessions and keeps serving,
//! reports the outage in /metrics, and picks up changes made while it was reconnecting.
//! Uses a private PostgreSQL (stopped and started by the test) and a private simulator.
//!
//! Run: cargo build --bins; cargo test -p smpp-e2e --test gateway_db_down

mod gateway_support;

use std::time::{Duration, Instant};

use gateway_support::{Gateway, Result, TestDb, metric, request};
use smpp_e2e::postgres::PrivatePostgres;
use smpp_e2e::smsc::{Smsc, SmscConfig};
use smpp_e2e::wait;

const SYSTEM_ID: &str = "gwdbdown";
const PASSWORD: &str = "Qm4vR8tz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_keeps_serving_and_recovers() -> Result {
    let smsc = Smsc::start(SmscConfig::standard().credential(SYSTEM_ID, PASSWORD)).await?;
    let mut pg = PrivatePostgres::start()?;
    let db = TestDb::on(pg.url()).await?;
    let gw = Gateway::start(&db, "gw-dbdown").await?;
    db.wait_schema().await?;
    let id = db
        .insert_legacy("dbdown", smsc.port("plain"), SYSTEM_ID, PASSWORD, &[])
        .await?;
    wait::until("bound", Duration::from_secs(30), || async {
        Ok((gw.bound("dbdown").await? == 1).then_some(()))
    })
    .await?;
    db.pool.close().await;

    smsc.reset_stats().await?;
    pg.stop()?;
    wait::until("smpp_config_db_up 0", Duration::from_secs(30), || async {
        Ok((metric(&gw.metrics().await?, "smpp_config_db_up", &[]) == 0.0).then_some(()))
    })
    .await?;
    // Over a window longer than a heartbeat and a resync attempt, nothing is torn down.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            gw.bound("dbdown").await?,
            1,
            "session dropped while PostgreSQL was down"
        );
        assert_eq!(smsc.stats().await?.open_binds(SYSTEM_ID).total, 1);
        assert_eq!(request(gw.http, "GET", "/ready").await?.0, 200);
        tokio::time::sleep(Duration::from_millis(250)).await; // sampling interval of the observation window
    }
    // The simulator's marks cover every moment of the outage so far, not only the samples.
    let marks = smsc.stats().await?.marks(SYSTEM_ID);
    assert_eq!(
        marks.map(|m| (m.low, m.high)),
        Some((1, 1)),
        "the bind went away (or doubled) while PostgreSQL was down"
    );
    let m = gw.metrics().await?;
    assert!(metric(&m, "smpp_config_db_errors_total", &[]) >= 1.0, "{m}");
    assert!(
        gw.log_text().contains("keeping the last configuration"),
        "outage not logged"
    );

    pg.start_again()?;
    let db = TestDb::on(pg.url()).await?;
    wait::until("smpp_config_db_up 1", Duration::from_secs(60), || async {
        Ok((metric(&gw.metrics().await?, "smpp_config_db_up", &[]) == 1.0).then_some(()))
    })
    .await?;
    // A change after the outage is applied (LISTEN re-established).
    db.update(&id, "password='xxxxxxxx'").await?;
    gw.wait_error("dbdown", "bind_esme_rinvpaswd", Duration::from_secs(30))
        .await?;
    gw.assert_no_secret_in_log(&[PASSWORD, "xxxxxxxx"]);
    Ok(())
}
