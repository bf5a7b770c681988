//! A real nginx (Debian's) enforces Faregate's budgets by configuration: the example config
//! `deploy/integrations/nginx/faregate.conf.template`, rendered as its header says, puts nginx
//! in front of the (fake) provider with `auth_request` to the gateway's `/v1/check`; what it
//! must show is `faregate_tests::forward_auth::assert_enforced`. nginx listens on a Unix socket
//! in the test's own directory (no port), as one process (killing it leaves no worker).
//!
//! The binary: `FAREGATE_TEST_NGINX`, else `/usr/sbin/nginx` (deploy/local/install installs it).

use std::path::Path;

use faregate_tests::forward_auth::{GatewayProcess, PROVIDER_KEY, assert_enforced, chain_with_a_blocked_key};

const TEMPLATE: &str = include_str!("../../deploy/integrations/nginx/faregate.conf.template");

/// The template with its variables set, as `envsubst` would.
fn render(socket: &Path, faregate: &str, upstream: &str) -> String {
    let mut config = TEMPLATE.to_string();
    for (name, value) in [
        ("LISTEN", format!("unix:{}", socket.display())),
        ("FAREGATE", faregate.to_string()),
        ("ANTHROPIC_UPSTREAM", upstream.to_string()),
        ("OPENAI_UPSTREAM", upstream.to_string()),
        ("ANTHROPIC_KEY", PROVIDER_KEY.to_string()),
        ("OPENAI_KEY", PROVIDER_KEY.to_string()),
    ] {
        config = config.replace(&format!("${{{name}}}"), &value);
    }
    assert!(!config.contains("${"), "every variable of the template is set: {config}");
    config
}

fn start_nginx(faregate: &str, upstream: &str) -> GatewayProcess {
    let binary = std::env::var("FAREGATE_TEST_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let socket = dir.path().join("nginx.sock");
    let config = dir.path().join("nginx.conf");
    std::fs::write(&config, render(&socket, faregate, upstream)).unwrap();
    let command = |extra: &[&str]| {
        let mut command = std::process::Command::new(&binary);
        command.arg("-p").arg(dir.path()).arg("-c").arg(&config).args(extra);
        command
    };
    let test = command(&["-t", "-q"])
        .output()
        .unwrap_or_else(|e| panic!("{binary} cannot run ({e}); deploy/local/install installs nginx"));
    assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
    let child = command(&["-g", "daemon off; master_process off;"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    GatewayProcess { child, socket, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_example_config_enforces_faregate_decisions() {
    let (chain, ana, bo) = chain_with_a_blocked_key().await;
    let faregate = chain.url().trim_start_matches("http://").to_string();
    let mut nginx = start_nginx(&faregate, &chain.fake.url());
    assert_enforced(&chain, &ana, &bo, &nginx.socket).await;
    assert!(nginx.child.try_wait().unwrap().is_none(), "nginx still runs");
    chain.assert_running();
}
