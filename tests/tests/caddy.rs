//! A real Caddy (Debian's) enforces Faregate's budgets by configuration: the example
//! `deploy/integrations/caddy/Caddyfile`, as it is, with its settings in the environment, puts
//! Caddy in front of the (fake) provider with `forward_auth` to the gateway's `/v1/check`; what
//! it must show is `faregate_tests::forward_auth::assert_enforced`. Caddy listens on a Unix
//! socket in the test's own directory (no port; its admin endpoint is off).
//!
//! The binary: `FAREGATE_TEST_CADDY`, else `/usr/bin/caddy` (deploy/local/install installs it).

use faregate_tests::forward_auth::{GatewayProcess, PROVIDER_KEY, assert_enforced, chain_with_a_blocked_key};

const CADDYFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/integrations/caddy/Caddyfile");

fn start_caddy(faregate: &str, upstream: &str) -> GatewayProcess {
    let binary = std::env::var("FAREGATE_TEST_CADDY").unwrap_or_else(|_| "/usr/bin/caddy".into());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("caddy.sock");
    let command = |verb: &str| {
        let mut command = std::process::Command::new(&binary);
        command
            .args([verb, "--config", CADDYFILE, "--adapter", "caddyfile"])
            // Its data and configuration directories: the test's own.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("LISTEN", format!("unix/{}", socket.display()))
            .env("PORT", "80")
            .env("FAREGATE", faregate)
            .env("ANTHROPIC_UPSTREAM", upstream)
            .env("OPENAI_UPSTREAM", upstream)
            .env("ANTHROPIC_KEY", PROVIDER_KEY)
            .env("OPENAI_KEY", PROVIDER_KEY);
        command
    };
    let validate = command("validate")
        .output()
        .unwrap_or_else(|e| panic!("{binary} cannot run ({e}); deploy/local/install installs caddy"));
    assert!(
        validate.status.success(),
        "caddy validate: {}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    let child = command("run").stdin(std::process::Stdio::null()).spawn().unwrap();
    GatewayProcess { child, socket, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_with_the_example_caddyfile_enforces_faregate_decisions() {
    let (chain, ana, bo) = chain_with_a_blocked_key().await;
    let mut caddy = start_caddy(chain.url(), &chain.fake.url());
    assert_enforced(&chain, &ana, &bo, &caddy.socket).await;
    assert!(caddy.child.try_wait().unwrap().is_none(), "caddy still runs");
    chain.assert_running();
}
