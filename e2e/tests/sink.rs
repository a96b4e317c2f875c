//! The benchmark sink (smpp34 server) driven by an independent client, rusmppc: binds are
//! checked and counted, submit_sm is answered, and unbind gets its unbind_resp (smpp34 1.5.1
//! loses it without the sink's workaround, which stalled Kannel's shutdown by 30 s).
//!
//! Run: cargo test -p smpp-e2e --test sink

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::InterfaceVersion;
use smpp_e2e::sink::{Credentials, Sink};
use tokio::net::TcpStream;

type Result<T = ()> = anyhow::Result<T>;

/// Deadlines here only bound a hang; how fast the sink answers is for `make bench`.
const HANG: Duration = Duration::from_secs(30);

async fn bind(port: u16, system_id: &str, password: &str) -> Result<rusmppc::Client> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let (client, _events) = rusmppc::ConnectionBuilder::new()
        .disable_interface_version_check()
        .response_timeout(HANG)
        .connected(tcp);
    client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_str(system_id)?)
                .password(COctetString::from_str(password)?)
                .interface_version(InterfaceVersion::Smpp3_4)
                .build(),
        )
        .await?;
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_are_checked_counted_and_unbind_is_answered() -> Result {
    let creds = Credentials::Only(HashMap::from([(
        "esme1".to_string(),
        "secret1".to_string(),
    )]));
    let sink = Sink::start(creds, 2).await?;
    assert_eq!(sink.ports().len(), 2);

    let t0 = Instant::now();
    let client = bind(sink.ports()[1], "esme1", "secret1").await?;
    let at = sink
        .wait_for(HANG, |k| {
            k.first_bind(|b| b.system_id == "esme1" && b.port == k.ports()[1])
        })
        .await
        .expect("the bind is recorded with the port it came in on");
    assert!(at >= t0);
    assert_eq!(sink.open_binds("esme1"), 1);

    let resp = client
        .submit_sm(
            SubmitSm::builder()
                .destination_addr(COctetString::from_str("4915112345678")?)
                .short_message(OctetString::from_slice(b"bench")?)
                .build(),
        )
        .await?;
    assert!(!resp.message_id().to_string().is_empty());

    assert!(
        bind(sink.port(), "esme1", "wrongpw").await.is_err(),
        "a wrong password is refused"
    );
    assert!(
        bind(sink.port(), "nobody", "secret1").await.is_err(),
        "an unknown system_id is refused"
    );

    // Ok means the unbind_resp came (within the client's response timeout, a bound on a hang).
    client.unbind().await?;
    sink.wait_for(HANG, |k| (k.open_binds("esme1") == 0).then_some(()))
        .await
        .expect("the unbound session is no longer open");

    let c = sink.counts();
    assert_eq!(
        (
            c.bind_requests,
            c.bind_rejected,
            c.binds,
            c.open_binds,
            c.submits
        ),
        (3, 2, 1, 0, 1),
        "{c:?}"
    );
    sink.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_credentials_and_many_binds() -> Result {
    let sink = Sink::start(Credentials::Any, 1).await?;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(bind(sink.port(), &format!("v{i}"), "pw").await?);
    }
    sink.wait_for(HANG, |k| (k.open_system_ids() == 20).then_some(()))
        .await
        .expect("20 distinct system_ids bound");
    drop(clients);
    sink.wait_for(HANG, |k| (k.counts().open_binds == 0).then_some(()))
        .await
        .expect("dropped connections are closed binds");
    sink.stop().await;
    Ok(())
}
