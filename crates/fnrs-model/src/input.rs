//! Request bodies of the v2 API (every field optional, as Fn reads them) and
//! the rules that turn them into stored objects: defaults on create, merge on
//! update, then validation ([`crate::validate`]).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::validate::{self, msg};
use crate::{Annotations, App, Config, DateTime, Error, Fn, Trigger};

/// A config map as sent: a `null` value counts as `""` (delete on update).
pub type ConfigInput = BTreeMap<String, Option<String>>;

fn config_values(c: ConfigInput) -> Config {
    c.into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

/// `Some("")` counts as absent, as Go's zero value does.
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Go's zero time counts as absent.
fn non_zero(t: &Option<DateTime>) -> bool {
    t.is_some_and(|t| !t.is_zero())
}

/// Key-wise merge of config: `""` deletes. Returns whether anything changed.
fn merge_config(target: &mut Config, patch: ConfigInput) {
    for (k, v) in config_values(patch) {
        if v.is_empty() {
            target.remove(&k);
        } else {
            target.insert(k, v);
        }
    }
}

/// Key-wise merge of annotations: `""` or `null` deletes.
fn merge_annotations(target: &mut Annotations, patch: Annotations) {
    for (k, v) in patch {
        if validate::is_empty_annotation_value(&v) {
            target.shift_remove(&k);
        } else {
            target.insert(k, v);
        }
    }
}

/// Body of `POST /v2/apps` and `PUT /v2/apps/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AppInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub config: Option<ConfigInput>,
    pub annotations: Option<Annotations>,
    pub syslog_url: Option<String>,
    pub shape: Option<String>,
    pub created_at: Option<DateTime>,
    pub updated_at: Option<DateTime>,
}

impl AppInput {
    /// A new app from a create body (timestamps sent by the client are ignored, as Fn does).
    pub fn create(self, id: String, now: DateTime) -> Result<App, Error> {
        if non_empty(&self.id).is_some() {
            return Err(Error::new(400, msg::APP_ID_PROVIDED));
        }
        let app = App {
            id,
            name: self.name.unwrap_or_default(),
            config: self.config.map(config_values).unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
            syslog_url: self.syslog_url.filter(|s| !s.is_empty()),
            shape: self.shape.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        validate::app(&app)?;
        Ok(app)
    }

    /// `current` updated with this body: the name is immutable, config and
    /// annotations merge, `syslog_url` is replaced (`""` clears), the shape
    /// stays. `updated_at` moves only if something changed.
    pub fn merge_into(self, current: &App, now: DateTime) -> Result<App, Error> {
        if let Some(name) = non_empty(&self.name)
            && name != current.name
        {
            return Err(Error::new(409, msg::APP_NAME_IMMUTABLE));
        }
        let mut app = current.clone();
        if let Some(c) = self.config {
            merge_config(&mut app.config, c);
        }
        if let Some(url) = self.syslog_url {
            app.syslog_url = if url.is_empty() { None } else { Some(url) };
        }
        if let Some(a) = self.annotations {
            merge_annotations(&mut app.annotations, a);
        }
        if app != *current {
            app.updated_at = now;
        }
        validate::app(&app)?;
        Ok(app)
    }
}

/// Body of `POST /v2/fns` and `PUT /v2/fns/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FnInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub app_id: Option<String>,
    pub image: Option<String>,
    pub format: Option<String>,
    pub memory: Option<u64>,
    pub timeout: Option<i32>,
    pub idle_timeout: Option<i32>,
    pub config: Option<ConfigInput>,
    pub annotations: Option<Annotations>,
    pub shape: Option<String>,
    pub created_at: Option<DateTime>,
    pub updated_at: Option<DateTime>,
}

impl FnInput {
    /// A new fn from a create body: defaults for memory and timeouts first,
    /// then Fn's checks in Fn's order. The caller still has to check that the
    /// app exists and copy its shape.
    pub fn create(self, id: String, now: DateTime) -> Result<Fn, Error> {
        if non_empty(&self.id).is_some() {
            return Err(Error::new(400, msg::FN_ID_PROVIDED));
        }
        if non_empty(&self.app_id).is_none() {
            return Err(Error::new(400, msg::FN_MISSING_APP_ID));
        }
        if non_empty(&self.name).is_none() {
            return Err(Error::new(400, msg::FN_MISSING_NAME));
        }
        let f = Fn {
            id,
            name: self.name.unwrap_or_default(),
            app_id: self.app_id.unwrap_or_default(),
            image: self.image.unwrap_or_default(),
            format: self.format.filter(|f| !f.is_empty()),
            memory: self
                .memory
                .filter(|m| *m != 0)
                .unwrap_or(Fn::DEFAULT_MEMORY),
            timeout: self
                .timeout
                .filter(|t| *t != 0)
                .unwrap_or(Fn::DEFAULT_TIMEOUT),
            idle_timeout: self
                .idle_timeout
                .filter(|t| *t != 0)
                .unwrap_or(Fn::DEFAULT_IDLE_TIMEOUT),
            config: self.config.map(config_values).unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
            shape: String::new(),
            created_at: now,
            updated_at: now,
        };
        validate::func(&f)?;
        Ok(f)
    }

    /// `current` updated with this body: image, format, memory and timeouts
    /// replaced when non-empty/non-zero, config and annotations merged; name,
    /// app id and shape are not changeable (ignored).
    pub fn merge_into(self, current: &Fn, now: DateTime) -> Result<Fn, Error> {
        let mut f = current.clone();
        if let Some(image) = non_empty(&self.image) {
            f.image = image.to_owned();
        }
        if let Some(format) = non_empty(&self.format) {
            f.format = Some(format.to_owned());
        }
        if let Some(m) = self.memory.filter(|m| *m != 0) {
            f.memory = m;
        }
        if let Some(t) = self.timeout.filter(|t| *t != 0) {
            f.timeout = t;
        }
        if let Some(t) = self.idle_timeout.filter(|t| *t != 0) {
            f.idle_timeout = t;
        }
        if let Some(c) = self.config {
            merge_config(&mut f.config, c);
        }
        if let Some(a) = self.annotations {
            merge_annotations(&mut f.annotations, a);
        }
        if f != *current {
            f.updated_at = now;
        }
        validate::func(&f)?;
        Ok(f)
    }
}

/// Body of `POST /v2/triggers` and `PUT /v2/triggers/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TriggerInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub app_id: Option<String>,
    pub fn_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub annotations: Option<Annotations>,
    pub created_at: Option<DateTime>,
    pub updated_at: Option<DateTime>,
}

impl TriggerInput {
    /// A new trigger from a create body. Non-zero timestamps are refused, as
    /// Fn does. The caller still checks that the app and fn exist and agree.
    pub fn create(self, id: String, now: DateTime) -> Result<Trigger, Error> {
        if non_empty(&self.id).is_some() {
            return Err(Error::new(400, msg::TRIGGER_ID_PROVIDED));
        }
        if non_zero(&self.created_at) {
            return Err(Error::new(400, msg::TRIGGER_CREATED_AT_PROVIDED));
        }
        if non_zero(&self.updated_at) {
            return Err(Error::new(400, msg::TRIGGER_UPDATED_AT_PROVIDED));
        }
        let t = Trigger {
            id,
            name: self.name.unwrap_or_default(),
            app_id: self.app_id.unwrap_or_default(),
            fn_id: self.fn_id.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            kind: self.kind.unwrap_or_default(),
            source: self.source.unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
        };
        validate::trigger(&t)?;
        Ok(t)
    }

    /// `current` updated with this body: name, fn id and source replaced when
    /// non-empty, annotations merged; app id and type are not changeable.
    pub fn merge_into(self, current: &Trigger, now: DateTime) -> Result<Trigger, Error> {
        let mut t = current.clone();
        if let Some(name) = non_empty(&self.name) {
            t.name = name.to_owned();
        }
        if let Some(fn_id) = non_empty(&self.fn_id) {
            t.fn_id = fn_id.to_owned();
        }
        if let Some(source) = non_empty(&self.source) {
            t.source = source.to_owned();
        }
        if let Some(a) = self.annotations {
            merge_annotations(&mut t.annotations, a);
        }
        if t != *current {
            t.updated_at = now;
        }
        validate::trigger(&t)?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime {
        DateTime::from_millis(1_555_000_000_000)
    }

    #[test]
    fn app_merge() {
        let input: AppInput = serde_json::from_value(json!({
            "name": "a", "config": {"A": "1", "B": "2"}, "annotations": {"x": 1, "y": "z"},
            "created_at": "0001-01-01T00:00:00.000Z"
        }))
        .unwrap();
        let app = input.create("ID".into(), now()).unwrap();
        let patch: AppInput = serde_json::from_value(json!({
            "config": {"A": "", "C": "3", "D": null}, "annotations": {"x": null, "y": ""}
        }))
        .unwrap();
        let later = DateTime::from_millis(1_555_000_001_000);
        let merged = patch.merge_into(&app, later).unwrap();
        assert_eq!(merged.config.len(), 2);
        assert_eq!(merged.config["C"], "3");
        assert!(merged.annotations.is_empty());
        assert_eq!(merged.updated_at, later);
        let same = AppInput::default().merge_into(&merged, now()).unwrap();
        assert_eq!(same.updated_at, later);
        let rename = AppInput {
            name: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(rename.merge_into(&app, later).unwrap_err().status, 409);
    }

    #[test]
    fn fn_defaults() {
        let input: FnInput =
            serde_json::from_value(json!({"app_id": "A", "name": "f", "image": "i"})).unwrap();
        let f = input.create("ID".into(), now()).unwrap();
        assert_eq!((f.memory, f.timeout, f.idle_timeout), (128, 30, 30));
        assert_eq!(f.format, None);
    }

    #[test]
    fn trigger_timestamps() {
        let input: TriggerInput = serde_json::from_value(json!({
            "app_id": "A", "fn_id": "F", "name": "t", "type": "http", "source": "/x",
            "created_at": "0001-01-01T00:00:00.000Z", "updated_at": "0001-01-01T00:00:00Z"
        }))
        .unwrap();
        assert!(input.clone().create("ID".into(), now()).is_ok());
        let with_time = TriggerInput {
            created_at: Some(now()),
            ..input
        };
        assert_eq!(
            with_time.create("ID".into(), now()).unwrap_err().message,
            msg::TRIGGER_CREATED_AT_PROVIDED
        );
    }
}
