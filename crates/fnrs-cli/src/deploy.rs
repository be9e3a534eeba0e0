//! `fnrs deploy [DIR] --app NAME`: a function directory with Fn's
//! `func.yaml` becomes a fn (image `file://<dir>`) with its triggers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::client::{ApiFailure, Client};

/// `fnrs deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Function directory holding func.yaml [default: .].
    pub dir: Option<PathBuf>,
    /// App to deploy into (created if missing).
    #[arg(long)]
    pub app: String,
}

/// The parts of Fn's func.yaml that the server needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FuncYaml {
    pub name: String,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub memory: Option<u64>,
    #[serde(default)]
    pub timeout: Option<i32>,
    #[serde(default)]
    pub idle_timeout: Option<i32>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: Option<Map<String, Value>>,
    #[serde(default)]
    pub triggers: Vec<TriggerYaml>,
}

/// One trigger in func.yaml.
#[derive(Debug, Clone, Deserialize)]
pub struct TriggerYaml {
    pub name: String,
    #[serde(rename = "type", default = "http")]
    pub kind: String,
    pub source: String,
}

fn http() -> String {
    "http".to_owned()
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == 404)
}

fn str_field(v: &Value, k: &str) -> anyhow::Result<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("answer has no {k}"))
}

pub async fn deploy(c: &Client, args: DeployArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let dir = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
    let yaml_path = dir.join("func.yaml");
    let text = std::fs::read_to_string(&yaml_path)
        .with_context(|| format!("reading {}", yaml_path.display()))?;
    let fy: FuncYaml =
        serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", yaml_path.display()))?;
    if fy.name.is_empty() {
        anyhow::bail!("{}: name is missing", yaml_path.display());
    }
    if fy.entrypoint.is_none() && fy.cmd.is_none() {
        anyhow::bail!(
            "{}: give the command to run as entrypoint or cmd",
            yaml_path.display()
        );
    }

    let app = match c.app(&args.app).await {
        Ok(a) => a,
        Err(e) if is_not_found(&e) => c.post("/v2/apps", &json!({ "name": args.app })).await?,
        Err(e) => return Err(e),
    };
    let app_id = str_field(&app, "id")?;

    let mut body = Map::new();
    body.insert("image".into(), json!(format!("file://{}", dir.display())));
    if let Some(f) = &fy.format {
        body.insert("format".into(), json!(f));
    }
    if let Some(m) = fy.memory {
        body.insert("memory".into(), json!(m));
    }
    if let Some(t) = fy.timeout {
        body.insert("timeout".into(), json!(t));
    }
    if let Some(t) = fy.idle_timeout {
        body.insert("idle_timeout".into(), json!(t));
    }
    if !fy.config.is_empty() {
        body.insert("config".into(), json!(fy.config));
    }
    if let Some(a) = &fy.annotations {
        body.insert("annotations".into(), Value::Object(a.clone()));
    }
    let fn_id = match c.func(&app_id, &fy.name).await {
        Ok(f) => {
            let fn_id = str_field(&f, "id")?;
            c.put(&format!("/v2/fns/{fn_id}"), &Value::Object(body))
                .await?;
            fn_id
        }
        Err(e) if is_not_found(&e) => {
            body.insert("app_id".into(), json!(app_id));
            body.insert("name".into(), json!(fy.name));
            str_field(&c.post("/v2/fns", &Value::Object(body)).await?, "id")?
        }
        Err(e) => return Err(e),
    };
    let f = c.get(&format!("/v2/fns/{fn_id}")).await?;

    let mut trigger_urls = Vec::new();
    for t in &fy.triggers {
        let created = match c.trigger(&app_id, &fn_id, &t.name).await {
            Ok(existing) => {
                let tid = str_field(&existing, "id")?;
                c.put(
                    &format!("/v2/triggers/{tid}"),
                    &json!({ "source": t.source }),
                )
                .await?;
                c.get(&format!("/v2/triggers/{tid}")).await?
            }
            Err(e) if is_not_found(&e) => {
                c.post(
                    "/v2/triggers",
                    &json!({
                        "app_id": app_id, "fn_id": fn_id, "name": t.name,
                        "type": t.kind, "source": t.source,
                    }),
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        let url = created
            .pointer("/annotations/fnproject.io~1trigger~1httpEndpoint")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        trigger_urls.push((t.name.clone(), url));
    }

    let invoke = f
        .pointer("/annotations/fnproject.io~1fn~1invokeEndpoint")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if c.json {
        let triggers: Map<String, Value> = trigger_urls
            .into_iter()
            .map(|(n, u)| (n, json!(u)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "app_id": app_id, "fn_id": fn_id, "invoke_url": invoke, "triggers": triggers,
            }))?
        );
    } else {
        println!("Deployed fn {} to app {}", fy.name, args.app);
        println!("Invoke endpoint: {invoke}");
        for (name, url) in trigger_urls {
            println!("Trigger {name}: {url}");
        }
    }
    Ok(())
}
