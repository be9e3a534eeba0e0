use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DateTime;

/// String → string configuration (env vars for the function). Sorted, as Go
/// marshals maps.
pub type Config = BTreeMap<String, String>;

/// Free-form annotations: key → any JSON value, insertion order kept.
pub type Annotations = serde_json::Map<String, serde_json::Value>;

/// The annotation key under which a fn's invoke URL is served.
pub const ANNOTATION_INVOKE_ENDPOINT: &str = "fnproject.io/fn/invokeEndpoint";
/// The annotation key under which an HTTP trigger's URL is served.
pub const ANNOTATION_HTTP_ENDPOINT: &str = "fnproject.io/trigger/httpEndpoint";
/// fnrs's app annotation whose value, a token, calls to the app's fns
/// (`/invoke` and `/t`) must carry as `Authorization: Bearer <token>`.
pub const ANNOTATION_INVOKE_TOKEN: &str = "fnrs.io/invoke-token";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Config::is_empty")]
    pub config: Config,
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_url: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shape: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

/// A function. `format` is fnrs's (and Fn 2018's) optional protocol field;
/// `None` means `http-stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fn {
    pub id: String,
    pub name: String,
    pub app_id: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub memory: u64,
    pub timeout: i32,
    pub idle_timeout: i32,
    #[serde(default)]
    pub config: Config,
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shape: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl Fn {
    pub const DEFAULT_MEMORY: u64 = 128;
    pub const DEFAULT_TIMEOUT: i32 = 30;
    pub const DEFAULT_IDLE_TIMEOUT: i32 = 30;

    /// The effective format name (`http-stream` when none is set).
    pub fn format_name(&self) -> &str {
        match self.format.as_deref() {
            None | Some("") => "http-stream",
            Some(f) => f,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: String,
    pub name: String,
    pub app_id: String,
    pub fn_id: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
}

/// How a call was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    Sync,
    Detached,
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// Accepted (detached) and not started yet.
    Queued,
    Running,
    Success,
    Error,
    Timeout,
    Cancelled,
}

impl CallStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "success" => Self::Success,
            "error" => Self::Error,
            "timeout" => Self::Timeout,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// The record of one call, as `/v2/fns/{fn_id}/calls/{call_id}` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub status: CallStatus,
    #[serde(rename = "type")]
    pub kind: CallType,
    pub app_id: String,
    pub fn_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    pub method: String,
    pub url: String,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime>,
    /// HTTP status the caller got (or would have got, for detached calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Free-form details (cold-start phases, attempts after a restart…).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub stats: serde_json::Map<String, serde_json::Value>,
}

/// A detached call's request, persisted before its 202 so that it runs even
/// if the server stops first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall {
    pub call_id: String,
    pub fn_id: String,
    pub trigger_id: Option<String>,
    pub method: String,
    pub url: String,
    /// Request headers as (name, value) pairs in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub attempts: u32,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_cursor: String,
    pub items: Vec<T>,
}

/// Filters for listing apps (cursor already decoded: it is the last name seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFilter {
    pub name: Option<String>,
    pub cursor: Option<String>,
    pub per_page: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FnFilter {
    pub app_id: String,
    pub name: Option<String>,
    pub cursor: Option<String>,
    pub per_page: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerFilter {
    pub app_id: String,
    pub fn_id: Option<String>,
    pub name: Option<String>,
    pub cursor: Option<String>,
    pub per_page: u32,
}

/// Filters for listing a fn's calls, newest first. `cursor` is the id of the
/// last call seen; the page holds calls with smaller ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    pub fn_id: String,
    pub cursor: Option<String>,
    pub per_page: u32,
}
