//! The client commands: `fnrs apps|fns|triggers …`, `deploy`, `invoke`,
//! `calls`, `logs`, against the API at `FN_API_URL`.

use std::io::{Read, Write};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

/// Where the client finds the server.
pub const ENV_API_URL: &str = "FN_API_URL";
/// The token the client sends as `Authorization: Bearer <token>` (as Fn's CLI).
pub const ENV_TOKEN: &str = "FN_TOKEN";

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// URL of the fnrs (or Fn) server.
    #[arg(long, env = ENV_API_URL, default_value = "http://localhost:8080", global = true)]
    pub api_url: String,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// Token sent as `Authorization: Bearer <token>` (the server's FN_API_TOKEN).
    #[arg(long, env = ENV_TOKEN, hide_env_values = true, global = true, value_parser = parse_token)]
    pub token: Option<fnrs_api::BearerToken>,
}

/// Never fails, so that clap never repeats the token in an error.
fn parse_token(s: &str) -> Result<fnrs_api::BearerToken, std::convert::Infallible> {
    Ok(fnrs_api::BearerToken::new(s))
}

/// `KEY=VALUE` options for config and annotations.
#[derive(Debug, Clone, Default, Args)]
pub struct MapOpts {
    /// Config entry `KEY=VALUE` (repeatable; `KEY=` deletes on update).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Annotation `KEY=VALUE`; VALUE is JSON if it parses, else a string.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
}

impl MapOpts {
    fn apply(&self, body: &mut Map<String, Value>) -> anyhow::Result<()> {
        if !self.config.is_empty() {
            let mut c = Map::new();
            for kv in &self.config {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("config {kv:?} is not KEY=VALUE"))?;
                c.insert(k.to_owned(), json!(v));
            }
            body.insert("config".into(), Value::Object(c));
        }
        if !self.annotation.is_empty() {
            let mut a = Map::new();
            for kv in &self.annotation {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("annotation {kv:?} is not KEY=VALUE"))?;
                let v = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
                a.insert(k.to_owned(), v);
            }
            body.insert("annotations".into(), Value::Object(a));
        }
        Ok(())
    }
}

/// `fnrs apps …`.
#[derive(Debug, Subcommand)]
pub enum AppsCmd {
    /// Create an app.
    Create {
        name: String,
        #[command(flatten)]
        maps: MapOpts,
        #[arg(long)]
        syslog_url: Option<String>,
        #[arg(long)]
        shape: Option<String>,
    },
    /// List apps.
    List,
    /// Show one app.
    Get { name: String },
    /// Update an app (config and annotations merge).
    Update {
        name: String,
        #[command(flatten)]
        maps: MapOpts,
        #[arg(long)]
        syslog_url: Option<String>,
    },
    /// Delete an app with its fns and triggers.
    Delete { name: String },
}

/// Settings of a fn on create and update.
#[derive(Debug, Clone, Default, Args)]
pub struct FnOpts {
    /// Memory in MB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout: Option<i32>,
    /// Idle timeout in seconds.
    #[arg(long)]
    pub idle_timeout: Option<i32>,
    /// Function format: http-stream, default, http, json, cloudevent.
    #[arg(long)]
    pub format: Option<String>,
    #[command(flatten)]
    pub maps: MapOpts,
}

impl FnOpts {
    fn apply(&self, body: &mut Map<String, Value>) -> anyhow::Result<()> {
        if let Some(m) = self.memory {
            body.insert("memory".into(), json!(m));
        }
        if let Some(t) = self.timeout {
            body.insert("timeout".into(), json!(t));
        }
        if let Some(t) = self.idle_timeout {
            body.insert("idle_timeout".into(), json!(t));
        }
        if let Some(f) = &self.format {
            body.insert("format".into(), json!(f));
        }
        self.maps.apply(body)
    }
}

/// `fnrs fns …`.
#[derive(Debug, Subcommand)]
pub enum FnsCmd {
    /// Create a fn in an app.
    Create {
        app: String,
        name: String,
        image: String,
        #[command(flatten)]
        opts: FnOpts,
    },
    /// List the fns of an app.
    List { app: String },
    /// Show one fn.
    Get { app: String, name: String },
    /// Update a fn.
    Update {
        app: String,
        name: String,
        #[arg(long)]
        image: Option<String>,
        #[command(flatten)]
        opts: FnOpts,
    },
    /// Delete a fn with its triggers.
    Delete { app: String, name: String },
}

/// `fnrs triggers …`.
#[derive(Debug, Subcommand)]
pub enum TriggersCmd {
    /// Create a trigger for a fn.
    Create {
        app: String,
        func: String,
        name: String,
        /// Path under /t/<app>, starting with '/'.
        #[arg(long)]
        source: String,
        #[arg(long = "type", default_value = "http")]
        kind: String,
        /// Annotation `KEY=VALUE`.
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotation: Vec<String>,
    },
    /// List the triggers of an app (optionally of one fn).
    List {
        app: String,
        #[arg(long = "fn")]
        func: Option<String>,
    },
    /// Show one trigger.
    Get {
        app: String,
        func: String,
        name: String,
    },
    /// Update a trigger.
    Update {
        app: String,
        func: String,
        name: String,
        #[arg(long)]
        source: Option<String>,
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotation: Vec<String>,
    },
    /// Delete a trigger.
    Delete {
        app: String,
        func: String,
        name: String,
    },
}

/// A thin client of the v2 API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub json: bool,
}

/// An answer that was not a success: Fn's message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Client {
    pub fn new(opts: &ClientOpts) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = opts.token.as_ref().filter(|t| !t.expose().is_empty()) {
            let mut v = reqwest::header::HeaderValue::try_from(format!("Bearer {}", t.expose()))
                .map_err(|_| anyhow!("{ENV_TOKEN} cannot be sent in an HTTP header"))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .context("setting up the HTTP client")?;
        Ok(Self {
            http,
            base: opts.api_url.trim_end_matches('/').to_owned(),
            json: opts.json,
        })
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("{status}: {}", text.trim()));
        Err(ApiFailure {
            status: status.as_u16(),
            message,
        }
        .into())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let resp = Self::check(resp).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        resp.json().await.context("reading the answer")
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
            .map(|_| ())
    }

    /// Every item of a list, following cursors.
    pub async fn list_all(&self, path_and_query: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut items = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let url = if cursor.is_empty() {
                path_and_query.to_owned()
            } else {
                format!("{path_and_query}{sep}cursor={}", enc(&cursor))
            };
            let page = self.get(&url).await?;
            if let Some(a) = page.get("items").and_then(Value::as_array) {
                items.extend(a.iter().cloned());
            }
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = c.to_owned(),
                _ => break,
            }
        }
        Ok(items)
    }

    async fn first(&self, path_and_query: &str, not_found: &str) -> anyhow::Result<Value> {
        let page = self.get(path_and_query).await?;
        page.get("items")
            .and_then(Value::as_array)
            .and_then(|a| a.first().cloned())
            .ok_or_else(|| {
                ApiFailure {
                    status: 404,
                    message: not_found.to_owned(),
                }
                .into()
            })
    }

    pub async fn app(&self, name: &str) -> anyhow::Result<Value> {
        self.first(&format!("/v2/apps?name={}", enc(name)), "App not found")
            .await
    }

    pub async fn func(&self, app_id: &str, name: &str) -> anyhow::Result<Value> {
        self.first(
            &format!("/v2/fns?app_id={}&name={}", enc(app_id), enc(name)),
            "Fn not found",
        )
        .await
    }

    pub async fn trigger(&self, app_id: &str, fn_id: &str, name: &str) -> anyhow::Result<Value> {
        self.first(
            &format!(
                "/v2/triggers?app_id={}&fn_id={}&name={}",
                enc(app_id),
                enc(fn_id),
                enc(name)
            ),
            "Trigger not found",
        )
        .await
    }

    /// Prints one object or a list, as JSON or a table.
    fn show(&self, v: &Value, columns: &[(&str, &str)]) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        let rows: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header(columns.iter().map(|(h, _)| *h));
        for r in rows {
            t.add_row(columns.iter().map(|(_, path)| cell(r, path)));
        }
        println!("{}", t.to_string().trim_end());
    }
}

/// A field of an object by `a.b` path, as text.
fn cell(v: &Value, path: &str) -> String {
    let mut cur = v;
    for part in path.split('|') {
        cur = match cur.get(part) {
            Some(c) => c,
            None => return String::new(),
        };
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

const APP_COLS: &[(&str, &str)] = &[("NAME", "name"), ("ID", "id")];
const FN_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("IMAGE", "image"),
    ("ID", "id"),
    ("INVOKE", "annotations|fnproject.io/fn/invokeEndpoint"),
];
const TRIGGER_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("ID", "id"),
    ("TYPE", "type"),
    ("SOURCE", "source"),
    ("ENDPOINT", "annotations|fnproject.io/trigger/httpEndpoint"),
];
const CALL_COLS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("STATUS", "status"),
    ("TYPE", "type"),
    ("HTTP", "http_status"),
    ("CREATED", "created_at"),
    ("COMPLETED", "completed_at"),
];

fn id(v: &Value) -> anyhow::Result<String> {
    v.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("answer has no id"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn annotations(list: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    MapOpts {
        config: vec![],
        annotation: list.to_vec(),
    }
    .apply(&mut m)?;
    Ok(m)
}

pub async fn apps(c: &Client, cmd: AppsCmd) -> anyhow::Result<()> {
    match cmd {
        AppsCmd::Create {
            name,
            maps,
            syslog_url,
            shape,
        } => {
            let mut body = obj(json!({ "name": name }));
            maps.apply(&mut body)?;
            if let Some(u) = syslog_url {
                body.insert("syslog_url".into(), json!(u));
            }
            if let Some(s) = shape {
                body.insert("shape".into(), json!(s));
            }
            let app = c.post("/v2/apps", &Value::Object(body)).await?;
            c.show(&app, APP_COLS);
        }
        AppsCmd::List => {
            let apps = c.list_all("/v2/apps").await?;
            c.show(&Value::Array(apps), APP_COLS);
        }
        AppsCmd::Get { name } => {
            let app = c.app(&name).await?;
            c.show(&app, APP_COLS);
        }
        AppsCmd::Update {
            name,
            maps,
            syslog_url,
        } => {
            let app = c.app(&name).await?;
            let mut body = Map::new();
            maps.apply(&mut body)?;
            if let Some(u) = syslog_url {
                body.insert("syslog_url".into(), json!(u));
            }
            let app = c
                .put(&format!("/v2/apps/{}", id(&app)?), &Value::Object(body))
                .await?;
            c.show(&app, APP_COLS);
        }
        AppsCmd::Delete { name } => {
            let app = c.app(&name).await?;
            c.delete(&format!("/v2/apps/{}", id(&app)?)).await?;
            if !c.json {
                println!("App {name} deleted");
            }
        }
    }
    Ok(())
}

pub async fn fns(c: &Client, cmd: FnsCmd) -> anyhow::Result<()> {
    match cmd {
        FnsCmd::Create {
            app,
            name,
            image,
            opts,
        } => {
            let app = c.app(&app).await?;
            let mut body = obj(json!({ "app_id": id(&app)?, "name": name, "image": image }));
            opts.apply(&mut body)?;
            let f = c.post("/v2/fns", &Value::Object(body)).await?;
            c.show(&f, FN_COLS);
        }
        FnsCmd::List { app } => {
            let app = c.app(&app).await?;
            let fns = c
                .list_all(&format!("/v2/fns?app_id={}", enc(&id(&app)?)))
                .await?;
            c.show(&Value::Array(fns), FN_COLS);
        }
        FnsCmd::Get { app, name } => {
            let app = c.app(&app).await?;
            let f = c.func(&id(&app)?, &name).await?;
            c.show(&f, FN_COLS);
        }
        FnsCmd::Update {
            app,
            name,
            image,
            opts,
        } => {
            let app = c.app(&app).await?;
            let f = c.func(&id(&app)?, &name).await?;
            let mut body = Map::new();
            if let Some(i) = image {
                body.insert("image".into(), json!(i));
            }
            opts.apply(&mut body)?;
            let f = c
                .put(&format!("/v2/fns/{}", id(&f)?), &Value::Object(body))
                .await?;
            c.show(&f, FN_COLS);
        }
        FnsCmd::Delete { app, name } => {
            let app = c.app(&app).await?;
            let f = c.func(&id(&app)?, &name).await?;
            c.delete(&format!("/v2/fns/{}", id(&f)?)).await?;
            if !c.json {
                println!("Fn {name} deleted");
            }
        }
    }
    Ok(())
}

pub async fn triggers(c: &Client, cmd: TriggersCmd) -> anyhow::Result<()> {
    match cmd {
        TriggersCmd::Create {
            app,
            func,
            name,
            source,
            kind,
            annotation,
        } => {
            let app = c.app(&app).await?;
            let app_id = id(&app)?;
            let f = c.func(&app_id, &func).await?;
            let mut body = obj(json!({
                "app_id": app_id, "fn_id": id(&f)?, "name": name, "type": kind, "source": source,
            }));
            body.extend(annotations(&annotation)?);
            let t = c.post("/v2/triggers", &Value::Object(body)).await?;
            c.show(&t, TRIGGER_COLS);
        }
        TriggersCmd::List { app, func } => {
            let app = c.app(&app).await?;
            let app_id = id(&app)?;
            let mut q = format!("/v2/triggers?app_id={}", enc(&app_id));
            if let Some(func) = func {
                let f = c.func(&app_id, &func).await?;
                q.push_str(&format!("&fn_id={}", enc(&id(&f)?)));
            }
            let ts = c.list_all(&q).await?;
            c.show(&Value::Array(ts), TRIGGER_COLS);
        }
        TriggersCmd::Get { app, func, name } => {
            let app = c.app(&app).await?;
            let app_id = id(&app)?;
            let f = c.func(&app_id, &func).await?;
            let t = c.trigger(&app_id, &id(&f)?, &name).await?;
            c.show(&t, TRIGGER_COLS);
        }
        TriggersCmd::Update {
            app,
            func,
            name,
            source,
            annotation,
        } => {
            let app = c.app(&app).await?;
            let app_id = id(&app)?;
            let f = c.func(&app_id, &func).await?;
            let t = c.trigger(&app_id, &id(&f)?, &name).await?;
            let mut body = annotations(&annotation)?;
            if let Some(s) = source {
                body.insert("source".into(), json!(s));
            }
            let t = c
                .put(&format!("/v2/triggers/{}", id(&t)?), &Value::Object(body))
                .await?;
            c.show(&t, TRIGGER_COLS);
        }
        TriggersCmd::Delete { app, func, name } => {
            let app = c.app(&app).await?;
            let app_id = id(&app)?;
            let f = c.func(&app_id, &func).await?;
            let t = c.trigger(&app_id, &id(&f)?, &name).await?;
            c.delete(&format!("/v2/triggers/{}", id(&t)?)).await?;
            if !c.json {
                println!("Trigger {name} deleted");
            }
        }
    }
    Ok(())
}

/// `fnrs invoke APP FN`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    pub app: String,
    pub func: String,
    /// Content-Type of the body read from stdin.
    #[arg(long, default_value = "text/plain")]
    pub content_type: String,
    /// Start the call and return at once (202).
    #[arg(long)]
    pub detached: bool,
    /// Print the call id on stderr (always done for detached calls).
    #[arg(long)]
    pub display_call_id: bool,
}

pub async fn invoke(c: &Client, args: InvokeArgs) -> anyhow::Result<()> {
    let app = c.app(&args.app).await?;
    let f = c.func(&id(&app)?, &args.func).await?;
    let mut body = Vec::new();
    // A terminal on stdin means no body (rather than waiting for one).
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("reading stdin")?;
    }
    let mut req = c
        .http
        .post(format!("{}/invoke/{}", c.base, id(&f)?))
        .header("Content-Type", args.content_type)
        .body(body);
    if args.detached {
        req = req.header("Fn-Invoke-Type", "detached");
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {}", c.base))?;
    if (args.display_call_id || args.detached)
        && let Some(cid) = resp
            .headers()
            .get("fn-call-id")
            .and_then(|v| v.to_str().ok())
    {
        eprintln!("Call ID: {cid}");
    }
    let resp = Client::check(resp).await?;
    let mut out = std::io::stdout().lock();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.context("reading the answer")? {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

/// `fnrs calls [APP] FN`.
#[derive(Debug, Args)]
pub struct CallsArgs {
    /// `APP FN` (names), or just `FN_ID`.
    #[arg(num_args = 1..=2, required = true)]
    pub target: Vec<String>,
    /// Most calls to show.
    #[arg(long, default_value_t = 30)]
    pub per_page: u32,
}

async fn fn_id_of(c: &Client, target: &[String]) -> anyhow::Result<String> {
    match target {
        [fn_id] => Ok(fn_id.clone()),
        [app, func] => {
            let app = c.app(app).await?;
            id(&c.func(&id(&app)?, func).await?)
        }
        _ => bail!("give APP FN or FN_ID"),
    }
}

pub async fn calls(c: &Client, args: CallsArgs) -> anyhow::Result<()> {
    let fn_id = fn_id_of(c, &args.target).await?;
    let page = c
        .get(&format!(
            "/v2/fns/{}/calls?per_page={}",
            enc(&fn_id),
            args.per_page
        ))
        .await?;
    let items = page.get("items").cloned().unwrap_or(Value::Array(vec![]));
    c.show(&items, CALL_COLS);
    Ok(())
}

/// `fnrs logs APP FN CALL_ID`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    pub app: String,
    pub func: String,
    pub call_id: String,
}

pub async fn logs(c: &Client, args: LogsArgs) -> anyhow::Result<()> {
    let fn_id = fn_id_of(c, &[args.app, args.func]).await?;
    let resp = c
        .http
        .get(format!(
            "{}/v2/fns/{}/calls/{}/log",
            c.base,
            enc(&fn_id),
            enc(&args.call_id)
        ))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", c.base))?;
    let resp = Client::check(resp).await?;
    let bytes = resp.bytes().await?;
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}
