//! Running services: one per process, or all of them in one process (`up`), under one shutdown
//! tree with a shared ops endpoint (`/metrics`, `/health`, `/ready`).

use std::time::Duration;

use anyhow::Context as _;

use crate::AppConfig;
use crate::cli::UpArgs;
use faregate_core::clickhouse::migrations;
use faregate_core::kafka::ensure_topics;
use faregate_core::shutdown::Tasks;
use faregate_core::telemetry::{self, Readiness};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingress,
    Processor,
    Budget,
}

const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

pub async fn up(mut config: AppConfig, mut args: UpArgs) -> anyhow::Result<()> {
    if args.demo {
        super::demo::prepare(&mut config)?;
        args.fake_upstream = true;
    }
    let _telemetry = telemetry::init(&config.telemetry, "faregate")?;
    let _fake = choose_upstreams(&mut config, &args).await?;
    let report = migrations::apply(&config.clickhouse)
        .await
        .with_context(|| format!("applying ClickHouse migrations at {}", config.clickhouse.url))?;
    tracing::info!(applied = ?report.applied, "clickhouse schema is current");
    let created = ensure_topics(&config.kafka, &config.kafka.topic_specs())
        .await
        .with_context(|| format!("creating topics on {}", config.kafka.brokers))?;
    tracing::info!(created = ?created, "kafka topics exist");
    let listeners = Listeners::bind(&mut config, &ALL).await?;
    let demo = if args.demo {
        Some(super::demo::Demo::setup(&config).await.context("setting up the demo")?)
    } else {
        print_banner(&config);
        None
    };
    run_services(config, &ALL, listeners, demo).await
}

const ALL: [Service; 3] = [Service::Ingress, Service::Processor, Service::Budget];

/// The sockets of a run, bound before anything starts, so that port 0 is resolved once, the
/// configuration names the real addresses (for the banner, the demo's clients and the logs) and
/// no other process can take a port between choosing and binding it.
struct Listeners {
    ops: tokio::net::TcpListener,
    ingress: Option<tokio::net::TcpListener>,
}

impl Listeners {
    async fn bind(config: &mut AppConfig, services: &[Service]) -> anyhow::Result<Listeners> {
        let ops = tokio::net::TcpListener::bind(&config.telemetry.metrics_listen)
            .await
            .with_context(|| format!("binding the ops endpoint on {}", config.telemetry.metrics_listen))?;
        config.telemetry.metrics_listen = ops.local_addr()?.to_string();
        let ingress = if services.contains(&Service::Ingress) {
            let listener = tokio::net::TcpListener::bind(&config.ingress.listen)
                .await
                .with_context(|| format!("binding the gateway on {}", config.ingress.listen))?;
            config.ingress.listen = listener.local_addr()?.to_string();
            Some(listener)
        } else {
            None
        };
        Ok(Listeners { ops, ingress })
    }
}

/// Apply `--upstream` / `--fake-upstream`; returns the fake provider to keep it running.
async fn choose_upstreams(
    config: &mut AppConfig,
    args: &UpArgs,
) -> anyhow::Result<Option<faregate_fake_upstream::FakeUpstream>> {
    use faregate_ingress::{Provider, UpstreamConfig};
    let upstream = |provider: Provider, base_url: String| {
        let key_var = match provider {
            Provider::Anthropic => "ANTHROPIC_UPSTREAM_KEY",
            Provider::Openai => "OPENAI_UPSTREAM_KEY",
        };
        UpstreamConfig {
            name: provider.name().to_string(),
            provider,
            base_url,
            api_key: faregate_core::config::Secret::new(std::env::var(key_var).unwrap_or_default()),
            models: vec![],
        }
    };
    if args.fake_upstream {
        let fake = faregate_fake_upstream::FakeUpstream::start(faregate_fake_upstream::FakeConfig::default())
            .await
            .context("starting the fake provider")?;
        fake.set_recording(false);
        config.ingress.upstreams =
            vec![upstream(Provider::Anthropic, fake.url()), upstream(Provider::Openai, fake.url())];
        tracing::info!(url = %fake.url(), "fake provider started; both providers forward to it");
        return Ok(Some(fake));
    }
    if !args.upstreams.is_empty() {
        let mut upstreams = Vec::new();
        for spec in &args.upstreams {
            let (provider, url) = spec
                .split_once('=')
                .with_context(|| format!("--upstream {spec:?}: expected PROVIDER=URL"))?;
            let provider = match provider {
                "anthropic" => Provider::Anthropic,
                "openai" => Provider::Openai,
                other => {
                    anyhow::bail!("--upstream {spec:?}: unknown provider {other:?} (anthropic or openai)")
                }
            };
            upstreams.push(upstream(provider, url.trim_end_matches('/').to_string()));
        }
        config.ingress.upstreams = upstreams;
        faregate_core::config::Validate::validate(&config.ingress).context("--upstream")?;
    }
    Ok(None)
}

/// How to point clients at this gateway and query what it measures.
fn print_banner(config: &AppConfig) {
    let gateway = format!("http://{}", config.ingress.listen);
    let upstreams: Vec<String> =
        config.ingress.upstreams.iter().map(|u| format!("{}={}", u.provider.name(), u.base_url)).collect();
    println!(
        "\nFaregate gateway: {gateway} (forwarding to {})\n\
         1. Create a key:   faregate keys create --org acme --team infra --user you   (prints fgk_...)\n\
         2. Claude Code:    export ANTHROPIC_BASE_URL={gateway} ANTHROPIC_API_KEY=fgk_...\n   \
         SDKs:           Anthropic(base_url=\"{gateway}\", api_key=\"fgk_...\") / OpenAI(base_url=\"{gateway}/v1\", ...)\n   \
         Codex:          a model provider with base_url = \"{gateway}/v1\" (docs/ingress.md)\n\
         3. Spend:          faregate report --by user --window today\n   \
         ClickHouse:     curl '{}/?database={}' --data-binary 'SELECT * FROM top_spenders_today'\n\
         Ops: http://{}/metrics /ready. Ctrl-C stops everything.\n",
        upstreams.join(", "),
        config.clickhouse.url,
        config.clickhouse.database,
        config.telemetry.metrics_listen,
    );
}

pub async fn single(mut config: AppConfig, service: Service) -> anyhow::Result<()> {
    let name = match service {
        Service::Ingress => "faregate-ingress",
        Service::Processor => "faregate-processor",
        Service::Budget => "faregate-budget",
    };
    let _telemetry = telemetry::init(&config.telemetry, name)?;
    let listeners = Listeners::bind(&mut config, &[service]).await?;
    run_services(config, &[service], listeners, None).await
}

async fn run_services(
    config: AppConfig,
    services: &[Service],
    listeners: Listeners,
    demo: Option<super::demo::Demo>,
) -> anyhow::Result<()> {
    let tasks = Tasks::default();
    tasks.cancel_on_signals();
    let readiness = Readiness::default();
    let Listeners { ops, ingress: mut ingress_listener } = listeners;
    tracing::info!(addr = %config.telemetry.metrics_listen, "ops endpoint: /metrics /health /ready");
    for service in services {
        let token = tasks.token().clone();
        let ready = readiness.component(match service {
            Service::Ingress => "ingress",
            Service::Processor => "processor",
            Service::Budget => "budget",
        });
        match service {
            Service::Ingress => {
                let (ingress, kafka) = (config.ingress.clone(), config.kafka.clone());
                let listener = ingress_listener.take().context("the gateway's socket was not bound")?;
                tasks.spawn("ingress", async move {
                    Ok(faregate_ingress::run_on(listener, ingress, kafka, ready, token).await?)
                });
            }
            Service::Processor => {
                let (processor, kafka, clickhouse) =
                    (config.processor.clone(), config.kafka.clone(), config.clickhouse.clone());
                let pricer = faregate_processor::catalog_pricer(&processor, &tasks)?;
                let partitions = readiness.component("processor partitions");
                tasks.spawn("processor", async move {
                    Ok(faregate_processor::run(
                        processor, kafka, clickhouse, pricer, ready, partitions, token,
                    )
                    .await?)
                });
                super::import::spawn_scheduled(&config, &tasks).await?;
            }
            Service::Budget => {
                let (budget, kafka) = (config.budget.clone(), config.kafka.clone());
                tasks.spawn(
                    "budget",
                    async move { Ok(faregate_budget::run(budget, kafka, ready, token).await?) },
                );
            }
        }
    }
    // Served only once every component is registered: with none registered, `/ready` would
    // say ready.
    let router = telemetry::ops_router(readiness.clone());
    let token = tasks.token().clone();
    tasks.spawn("ops", async move { Ok(telemetry::serve(ops, router, token).await?) });
    if let Some(demo) = demo {
        let token = tasks.token().clone();
        tasks.spawn("demo", async move { Ok(demo.run(token).await?) });
    }
    tasks.drain(DRAIN_DEADLINE).await.map_err(anyhow::Error::msg)
}
