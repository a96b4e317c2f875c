//! Proves each real part of the environment works (needs `make env-up`; `make test` does it):
//! the apiserver takes a CRD from a kube client and kubectl lists it, PostgreSQL answers,
//! Redis answers PING, and a private PostgreSQL can be stopped and started again.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use smpp_e2e::env::Env;
use smpp_e2e::postgres::{PrivatePostgres, PrivateRedis};
use smpp_e2e::wait;

fn env() -> Env {
    Env::load().expect("environment from target/env.sh")
}

/// A throwaway CRD (group e2e.smpp.test) with a unique name, so reruns against the same
/// apiserver never collide.
fn throwaway_crd(suffix: &str) -> CustomResourceDefinition {
    let plural = format!("probes{suffix}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.e2e.smpp.test")},
        "spec": {
            "group": "e2e.smpp.test",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": format!("probe{suffix}"), "kind": format!("Probe{suffix}")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                }}}
            }]
        }
    }))
    .expect("valid CRD")
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[tokio::test]
async fn apiserver_takes_a_crd_that_kubectl_lists() {
    let env = env();
    let client = env.kube_client().await.expect("kube client");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let suffix = format!("{:08x}", rand::random::<u32>());
    let crd = throwaway_crd(&suffix);
    let name = crd.metadata.name.clone().unwrap();

    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    wait::until("CRD Established", Duration::from_secs(30), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            Ok(crds
                .get(&name)
                .await
                .map(|c| is_established(&c).then_some(()))?)
        }
    })
    .await
    .unwrap();

    let out = env
        .kubectl()
        .args([
            "get",
            "crd",
            &name,
            "-o",
            "jsonpath={.metadata.name} {.spec.group}",
        ])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{name} e2e.smpp.test")
    );

    // The new resource type is served: kubectl can list (zero) objects of it.
    let out = env
        .kubectl()
        .args(["get", &format!("probes{suffix}"), "-A", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl get probes: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    crds.delete(&name, &Default::default())
        .await
        .expect("delete CRD");
}

#[tokio::test]
async fn postgres_answers_a_query() {
    let pool = env().pg_pool().await.expect("connect to PostgreSQL");
    let (n, user, db): (i32, String, String) =
        sqlx::query_as("select 40 + 2, current_user::text, current_database()::text")
            .fetch_one(&pool)
            .await
            .expect("query");
    assert_eq!((n, user.as_str(), db.as_str()), (42, "smpp", "smpp"));
}

#[tokio::test]
async fn postgres_refuses_a_wrong_password() {
    let env = env();
    let wrong = env.database_url.replacen("smpp:smpp@", "smpp:wrong@", 1);
    assert_ne!(
        wrong, env.database_url,
        "DATABASE_URL has the expected user:password"
    );
    let err = smpp_e2e::env::Env {
        database_url: wrong,
        ..env
    }
    .pg_pool()
    .await
    .expect_err("password authentication must be enforced");
    assert!(
        format!("{err}").contains("password authentication failed"),
        "{err}"
    );
}

#[tokio::test]
async fn redis_answers_ping() {
    let mut conn = env().redis().await.expect("connect to Redis");
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    let key = format!("e2e:probe:{:08x}", rand::random::<u32>());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "v");
}

#[tokio::test]
async fn private_postgres_stops_and_starts_again_on_the_same_port() {
    let mut pg = PrivatePostgres::start().expect("start private PostgreSQL");
    let port = pg.port();
    let pool = pg.pool().await.expect("connect");
    for sql in ["create table kept (v int)", "insert into kept values (7)"] {
        sqlx::query(sql).execute(&pool).await.expect("write");
    }
    pool.close().await;

    pg.stop().expect("stop");
    let down = pg.pool().await;
    assert!(
        down.is_err(),
        "a stopped PostgreSQL must refuse connections"
    );

    pg.start_again().expect("start again");
    assert_eq!(
        pg.port(),
        port,
        "restart keeps the port, so clients reconnect to the same URL"
    );
    let pool = pg.pool().await.expect("reconnect");
    let (v,): (i32,) = sqlx::query_as("select v from kept")
        .fetch_one(&pool)
        .await
        .expect("data survives");
    assert_eq!(v, 7);
    pool.close().await;

    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "drop removes the private data dir");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "drop stops the server"
    );
}

#[tokio::test]
async fn private_redis_stops_and_starts_again() {
    let mut r = PrivateRedis::start().expect("start private Redis");
    let port = r.port();
    let client = redis::Client::open(r.url()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    r.stop().expect("stop");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "stopped"
    );
    r.start_again().expect("start again");
    assert_eq!(r.port(), port);
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("reconnect");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}
