//! What a new user meets first: `--help`, a config that would expose the admin
//! API, a second process on the same data dir, a port already taken, the admin
//! token as clients send it.

use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, validate, Sluice, BIN};

#[test]
fn help_names_the_environment_it_reads() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "SLUICE_CONFIG",
        "SLUICE_LOG",
        "SLUICE_LOG_FORMAT",
        "${NAME}",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
}

/// Listening beyond loopback without an admin token is refused by `validate` (and
/// so by `serve`), naming the key and both ways out; either way out is accepted.
#[test]
fn an_open_admin_api_beyond_loopback_is_refused() {
    let (code, _, stderr) = validate("server:\n  listen: 0.0.0.0:8080\n");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("server.listen: sluice listens on 0.0.0.0:8080, beyond this machine")
            && stderr.contains("auth.admin_token")
            && stderr.contains("auth.admin_open: true")
            && stderr.contains("(line 2, column 3)"),
        "{stderr}"
    );
    for auth in ["admin_token: s3cret", "admin_open: true"] {
        let (code, _, stderr) = validate(&format!(
            "server:\n  listen: 0.0.0.0:8080\n  auth:\n    {auth}\n"
        ));
        assert_eq!(code, 0, "{auth}: {stderr}");
    }
    let (code, _, stderr) = validate("server:\n  listen: 127.0.0.1:8080\n");
    assert_eq!(code, 0, "{stderr}");
}

/// A second sluice on a data dir in use exits 1 naming the process that holds it,
/// and the first one keeps serving.
#[tokio::test]
async fn a_second_process_on_the_same_data_dir_names_the_first() {
    let first = Sluice::start("").await;
    let config = std::fs::read_to_string(&first.config).unwrap();
    let second_config = first.dir.path().join("second.yaml");
    let listen = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &second_config,
        config.replace(&first.addr.to_string(), &listen),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&second_config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another sluice process (pid {}) is using",
            first.pid()
        )) && stderr.contains("stop it or choose another data_dir"),
        "{stderr}"
    );
    let ready = first.client.get(first.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// A port already taken is a clear error, and nothing is left behind: the data
/// dir is not created.
#[test]
fn a_port_in_use_is_named_and_creates_no_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: {addr}\n  data_dir: {}\n",
            data.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&addr.to_string()) && stderr.to_lowercase().contains("in use"),
        "{stderr}"
    );
    assert!(!data.exists(), "data dir created by a start that failed");
}

/// The admin token is checked exactly, the `Bearer` scheme in any case (clients
/// differ); a wrong or missing token is a JSON 401.
#[tokio::test]
async fn the_admin_token_is_checked_and_the_scheme_is_any_case() {
    let sluice = Sluice::start_with_server("", "  auth:\n    admin_token: s3cret\n").await;
    let get = |auth: Option<&'static str>| {
        let mut req = sluice.client.get(sluice.url("/api/subscriptions"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.timeout(Duration::from_secs(5)).send()
    };
    for auth in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
        assert_eq!(get(Some(auth)).await.unwrap().status(), 200, "{auth}");
    }
    for auth in [None, Some("Bearer S3CRET"), Some("Basic s3cret")] {
        let r = get(auth).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
}
