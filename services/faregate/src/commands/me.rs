//! `faregate me`: a developer's own budget, from a gateway's `GET /v1/me` with their virtual
//! key (`--key`, else `FAREGATE_KEY`, else `ANTHROPIC_API_KEY`). The key is sent in a header,
//! never printed. A short table, `--format json` (the gateway's answer as is), or
//! `--statusline` (one line, e.g. `$3.20 of $10.00 today`, for an editor's status line).

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cli::{MeArgs, MeFormat};

fn key(args: &MeArgs) -> anyhow::Result<String> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match args.key.clone().or_else(|| from_env("FAREGATE_KEY")).or_else(|| from_env("ANTHROPIC_API_KEY")) {
        Some(key) => Ok(key.trim().to_string()),
        None => bail!("no key: pass --key or set FAREGATE_KEY or ANTHROPIC_API_KEY"),
    }
}

fn gateway(args: &MeArgs) -> String {
    args.gateway
        .clone()
        .or_else(|| std::env::var("ANTHROPIC_BASE_URL").ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:8787".to_string())
        .trim_end_matches('/')
        .to_string()
}

pub async fn me(args: MeArgs) -> anyhow::Result<()> {
    let (key, base) = (key(&args)?, gateway(&args));
    let statusline = args.statusline;
    let url = format!("{base}/v1/me{}", if statusline { "?format=statusline" } else { "" });
    let response = reqwest::Client::new()
        .get(&url)
        .header("x-api-key", key)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("calling {base}/v1/me"))?;
    let status = response.status();
    let text = response.text().await.with_context(|| format!("reading the answer of {base}/v1/me"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        bail!("{base}/v1/me answered {status}: {message}");
    }
    if statusline {
        println!("{}", text.lines().next().unwrap_or_default());
        return Ok(());
    }
    let me: Value = serde_json::from_str(&text).context("the gateway's answer is not JSON")?;
    match args.format {
        MeFormat::Json => println!("{}", serde_json::to_string_pretty(&me)?),
        MeFormat::Table => print!("{}", table(&me)),
    }
    Ok(())
}

/// The table for people: who the key is, then each covering budget.
pub fn table(me: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let k = &me["key"];
    let mut out = format!(
        "key {} (org {}, team {}, user {}, project {})\n",
        s(&k["key_id"]),
        s(&k["org"]),
        s(&k["team"]),
        s(&k["user"]),
        s(&k["project"])
    );
    let budgets = me["budgets"].as_array().cloned().unwrap_or_default();
    if budgets.is_empty() {
        out.push_str("no budget covers this key\n");
        return out;
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["budget", "scope", "window", "spent", "limit", "remaining", "resets"]);
    let money = |v: &Value| {
        let amount: rust_decimal::Decimal = v.as_str().and_then(|t| t.parse().ok()).unwrap_or_default();
        format!("${}", crate::commands::report::cents(faregate_core::money::Usd(amount)))
    };
    for b in &budgets {
        let window = if b["rolling"].as_bool() == Some(true) {
            format!("rolling {}", s(&b["period"]))
        } else {
            format!("{} ({})", s(&b["period"]), s(&b["time_zone"]))
        };
        table.add_row(vec![
            s(&b["name"]),
            s(&b["scope"]),
            window,
            money(&b["spent_usd"]),
            money(&b["limit_usd"]),
            money(&b["remaining_usd"]),
            s(&b["resets_at"]),
        ]);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    out
}
