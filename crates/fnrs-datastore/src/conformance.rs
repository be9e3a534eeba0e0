//! The behaviour every [`Datastore`] must show, as one suite run against each
//! implementation (memory, SQLite, PostgreSQL, the cache).
//!
//! Each case starts from and leaves behind a store without apps: run
//! [`run_all`] on an empty store. Cases panic (assert) on the first deviation.

use std::sync::Arc;

use fnrs_model::{
    App, AppFilter, Call, CallFilter, CallStatus, CallType, DateTime, Error, Fn, FnFilter,
    PendingCall, Trigger, TriggerFilter, new_id,
};
use serde_json::json;

use crate::{Datastore, PendingSummary, TRIGGER_FN_NOT_IN_APP};

/// A shared store under test.
pub type Store = Arc<dyn Datastore>;

/// Runs every case in turn, printing each name (to stderr) as it starts.
pub async fn run_all(store: Store) {
    macro_rules! case {
        ($($name:ident),*) => {$(
            eprintln!("conformance: {}", stringify!($name));
            $name(store.clone()).await;
        )*};
    }
    case!(
        apps_crud,
        fns_crud,
        triggers_crud,
        cascades,
        app_pagination,
        fn_pagination,
        trigger_pagination,
        round_trips,
        calls,
        logs,
        record_batches,
        logs_with_records,
        pending,
        pending_pages,
        concurrent_writers
    );
}

// ---------------------------------------------------------------- builders

/// A time `n` seconds after a fixed instant (deterministic, with millis).
pub fn t(n: i64) -> DateTime {
    DateTime::from_millis(1_555_000_000_123 + n * 1000)
}

/// A new app with the given name.
pub fn app(name: &str) -> App {
    App {
        id: new_id(),
        name: name.into(),
        config: Default::default(),
        annotations: Default::default(),
        syslog_url: None,
        shape: String::new(),
        created_at: t(0),
        updated_at: t(0),
    }
}

/// A new fn of `app_id` with the given name.
pub fn func(app_id: &str, name: &str) -> Fn {
    Fn {
        id: new_id(),
        name: name.into(),
        app_id: app_id.into(),
        image: "fnproject/hello:0.0.1".into(),
        format: None,
        memory: Fn::DEFAULT_MEMORY,
        timeout: Fn::DEFAULT_TIMEOUT,
        idle_timeout: Fn::DEFAULT_IDLE_TIMEOUT,
        config: Default::default(),
        annotations: Default::default(),
        shape: String::new(),
        created_at: t(0),
        updated_at: t(0),
    }
}

/// A new HTTP trigger of `f` with the given name and source.
pub fn trigger(f: &Fn, name: &str, source: &str) -> Trigger {
    Trigger {
        id: new_id(),
        name: name.into(),
        app_id: f.app_id.clone(),
        fn_id: f.id.clone(),
        created_at: t(0),
        updated_at: t(0),
        kind: "http".into(),
        source: source.into(),
        annotations: Default::default(),
    }
}

/// A finished sync call of `f` with the given id.
pub fn call(f: &Fn, id: &str) -> Call {
    Call {
        id: id.into(),
        status: CallStatus::Success,
        kind: CallType::Sync,
        app_id: f.app_id.clone(),
        fn_id: f.id.clone(),
        trigger_id: None,
        method: "POST".into(),
        url: format!("http://localhost/invoke/{}", f.id),
        created_at: t(1),
        started_at: Some(t(2)),
        completed_at: Some(t(3)),
        http_status: Some(200),
        error: None,
        stats: Default::default(),
    }
}

/// `n` call ids that sort in creation order.
fn call_ids(n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|_| new_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    ids
}

fn pending_of(c: &Call) -> PendingCall {
    PendingCall {
        call_id: c.id.clone(),
        fn_id: c.fn_id.clone(),
        trigger_id: None,
        method: "POST".into(),
        url: c.url.clone(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-B".into(), "2".into()),
            ("X-A".into(), "1".into()),
            ("X-B".into(), "3".into()),
        ],
        body: vec![0, 159, 146, 150, b'{', b'}'],
        attempts: 0,
    }
}

fn all<T>() -> T
where
    T: Default,
{
    T::default()
}

async fn names_of_apps(s: &Store, filter: AppFilter) -> Vec<String> {
    let apps = s.list_apps(&filter).await.unwrap();
    apps.into_iter().map(|a| a.name).collect()
}

/// Removes every app (and so everything) the case left.
async fn clean(s: &Store) {
    for a in s.list_apps(&all()).await.unwrap() {
        s.remove_app(&a.id).await.unwrap();
    }
    assert!(s.list_apps(&all()).await.unwrap().is_empty());
}

async fn assert_empty_start(s: &Store) {
    assert!(
        s.list_apps(&all()).await.unwrap().is_empty(),
        "conformance cases need a store without apps"
    );
}

// ---------------------------------------------------------------- cases

/// Apps: insert, get (by id and name), update, conflicts, remove.
pub async fn apps_crud(s: Store) {
    assert_empty_start(&s).await;
    let mut a = app("app-one");
    a.config.insert("K".into(), "v".into());
    a.syslog_url = Some("tcp://logs:514".into());
    a.shape = "GENERIC_X86".into();
    s.insert_app(&a).await.unwrap();
    assert_eq!(s.get_app(&a.id).await.unwrap(), a);
    assert_eq!(s.get_app_by_name("app-one").await.unwrap(), a);

    // Same name, or same id: 409.
    let err = s.insert_app(&app("app-one")).await.unwrap_err();
    assert_eq!(err, Error::APP_ALREADY_EXISTS);
    let mut same_id = app("app-other");
    same_id.id = a.id.clone();
    assert_eq!(
        s.insert_app(&same_id).await.unwrap_err(),
        Error::APP_ALREADY_EXISTS
    );
    assert_eq!(
        s.get_app_by_name("app-other").await.unwrap_err(),
        Error::APP_NOT_FOUND
    );

    // Update replaces everything but id and created_at.
    let mut b = a.clone();
    b.config.clear();
    b.config.insert("NEW".into(), "x".into());
    b.annotations.insert("k".into(), json!(1));
    b.syslog_url = None;
    b.updated_at = t(10);
    b.created_at = t(99);
    s.update_app(&b).await.unwrap();
    let got = s.get_app(&a.id).await.unwrap();
    b.created_at = a.created_at;
    assert_eq!(got, b);

    // Renaming onto a taken name: 409; missing app: 404.
    let c = app("app-two");
    s.insert_app(&c).await.unwrap();
    let mut rename = c.clone();
    rename.name = "app-one".into();
    assert_eq!(
        s.update_app(&rename).await.unwrap_err(),
        Error::APP_ALREADY_EXISTS
    );
    assert_eq!(s.get_app(&c.id).await.unwrap(), c);
    let ghost = app("ghost");
    assert_eq!(
        s.update_app(&ghost).await.unwrap_err(),
        Error::APP_NOT_FOUND
    );
    assert_eq!(
        s.get_app(&ghost.id).await.unwrap_err(),
        Error::APP_NOT_FOUND
    );
    assert_eq!(
        s.get_app_by_name("ghost").await.unwrap_err(),
        Error::APP_NOT_FOUND
    );

    // Remove: gone, and a second remove is a 404; the name is free again.
    s.remove_app(&a.id).await.unwrap();
    assert_eq!(s.get_app(&a.id).await.unwrap_err(), Error::APP_NOT_FOUND);
    assert_eq!(
        s.get_app_by_name("app-one").await.unwrap_err(),
        Error::APP_NOT_FOUND
    );
    assert_eq!(s.remove_app(&a.id).await.unwrap_err(), Error::APP_NOT_FOUND);
    s.insert_app(&app("app-one")).await.unwrap();
    clean(&s).await;
}

/// Fns: insert (app must exist), conflicts per app, update, remove.
pub async fn fns_crud(s: Store) {
    assert_empty_start(&s).await;
    let a = app("fa");
    let b = app("fb");
    s.insert_app(&a).await.unwrap();
    s.insert_app(&b).await.unwrap();

    let orphan = func(&new_id(), "f");
    assert_eq!(
        s.insert_fn(&orphan).await.unwrap_err(),
        Error::APP_NOT_FOUND
    );
    assert_eq!(s.get_fn(&orphan.id).await.unwrap_err(), Error::FN_NOT_FOUND);

    let mut f = func(&a.id, "f1");
    f.format = Some("json".into());
    f.config.insert("A".into(), "1".into());
    f.memory = 256;
    s.insert_fn(&f).await.unwrap();
    assert_eq!(s.get_fn(&f.id).await.unwrap(), f);

    // Same name in the same app: 409; in another app: fine.
    assert_eq!(
        s.insert_fn(&func(&a.id, "f1")).await.unwrap_err(),
        Error::FN_ALREADY_EXISTS
    );
    let mut same_id = func(&a.id, "f-other");
    same_id.id = f.id.clone();
    assert_eq!(
        s.insert_fn(&same_id).await.unwrap_err(),
        Error::FN_ALREADY_EXISTS
    );
    let fb = func(&b.id, "f1");
    s.insert_fn(&fb).await.unwrap();

    // Update replaces fields; app_id and created_at stay.
    let mut g = f.clone();
    g.image = "fnproject/hello:0.0.2".into();
    g.format = None;
    g.memory = 1024;
    g.timeout = 300;
    g.idle_timeout = 3600;
    g.config.clear();
    g.annotations
        .insert("x".into(), json!({"b": 1, "a": [1, 2]}));
    g.shape = "GENERIC_ARM".into();
    g.updated_at = t(5);
    g.app_id = b.id.clone();
    g.created_at = t(77);
    s.update_fn(&g).await.unwrap();
    let got = s.get_fn(&f.id).await.unwrap();
    g.app_id = a.id.clone();
    g.created_at = f.created_at;
    assert_eq!(got, g);

    let f2 = func(&a.id, "f2");
    s.insert_fn(&f2).await.unwrap();
    let mut rename = f2.clone();
    rename.name = "f1".into();
    assert_eq!(
        s.update_fn(&rename).await.unwrap_err(),
        Error::FN_ALREADY_EXISTS
    );
    assert_eq!(s.get_fn(&f2.id).await.unwrap(), f2);
    assert_eq!(
        s.update_fn(&func(&a.id, "nope")).await.unwrap_err(),
        Error::FN_NOT_FOUND
    );

    s.remove_fn(&f.id).await.unwrap();
    assert_eq!(s.get_fn(&f.id).await.unwrap_err(), Error::FN_NOT_FOUND);
    assert_eq!(s.remove_fn(&f.id).await.unwrap_err(), Error::FN_NOT_FOUND);
    assert_eq!(s.get_fn(&fb.id).await.unwrap(), fb);
    s.insert_fn(&func(&a.id, "f1")).await.unwrap();
    clean(&s).await;
}

/// Triggers: every 404/400/409 of insert and update, lookup by source.
pub async fn triggers_crud(s: Store) {
    assert_empty_start(&s).await;
    let a = app("ta");
    let b = app("tb");
    s.insert_app(&a).await.unwrap();
    s.insert_app(&b).await.unwrap();
    let f = func(&a.id, "f");
    let g = func(&a.id, "g");
    let other = func(&b.id, "f");
    for x in [&f, &g, &other] {
        s.insert_fn(x).await.unwrap();
    }

    let mut no_app = trigger(&f, "t", "/t");
    no_app.app_id = new_id();
    assert_eq!(
        s.insert_trigger(&no_app).await.unwrap_err(),
        Error::APP_NOT_FOUND
    );
    let mut no_fn = trigger(&f, "t", "/t");
    no_fn.fn_id = new_id();
    assert_eq!(
        s.insert_trigger(&no_fn).await.unwrap_err(),
        Error::FN_NOT_FOUND
    );
    let mut foreign = trigger(&f, "t", "/t");
    foreign.fn_id = other.id.clone();
    assert_eq!(
        s.insert_trigger(&foreign).await.unwrap_err(),
        TRIGGER_FN_NOT_IN_APP
    );

    let mut t1 = trigger(&f, "t1", "/one");
    t1.annotations.insert("z".into(), json!("last"));
    t1.annotations.insert("a".into(), json!("first"));
    s.insert_trigger(&t1).await.unwrap();
    assert_eq!(s.get_trigger(&t1.id).await.unwrap(), t1);
    assert_eq!(
        s.get_trigger_by_source(&a.id, "http", "/one")
            .await
            .unwrap(),
        t1
    );
    assert_eq!(
        s.get_trigger_by_source(&b.id, "http", "/one")
            .await
            .unwrap_err(),
        Error::TRIGGER_NOT_FOUND
    );
    assert_eq!(
        s.get_trigger_by_source(&a.id, "http", "/two")
            .await
            .unwrap_err(),
        Error::TRIGGER_NOT_FOUND
    );

    // Same source in the app (any fn): source conflict, checked first.
    assert_eq!(
        s.insert_trigger(&trigger(&g, "other", "/one"))
            .await
            .unwrap_err(),
        Error::TRIGGER_SOURCE_EXISTS
    );
    assert_eq!(
        s.insert_trigger(&trigger(&f, "t1", "/one"))
            .await
            .unwrap_err(),
        Error::TRIGGER_SOURCE_EXISTS
    );
    // Same (app, fn, name) with another source: name conflict.
    assert_eq!(
        s.insert_trigger(&trigger(&f, "t1", "/elsewhere"))
            .await
            .unwrap_err(),
        Error::TRIGGER_EXISTS
    );
    // Same name on another fn, same source in another app: fine.
    let t2 = trigger(&g, "t1", "/two");
    s.insert_trigger(&t2).await.unwrap();
    s.insert_trigger(&trigger(&other, "t1", "/one"))
        .await
        .unwrap();

    // Updates: same conflicts, app_id and created_at kept.
    let mut u = t2.clone();
    u.source = "/one".into();
    assert_eq!(
        s.update_trigger(&u).await.unwrap_err(),
        Error::TRIGGER_SOURCE_EXISTS
    );
    let mut u = t2.clone();
    u.fn_id = f.id.clone();
    assert_eq!(
        s.update_trigger(&u).await.unwrap_err(),
        Error::TRIGGER_EXISTS
    );
    let mut u = t2.clone();
    u.fn_id = other.id.clone();
    assert_eq!(
        s.update_trigger(&u).await.unwrap_err(),
        TRIGGER_FN_NOT_IN_APP
    );
    let mut u = t2.clone();
    u.fn_id = new_id();
    assert_eq!(s.update_trigger(&u).await.unwrap_err(), Error::FN_NOT_FOUND);
    assert_eq!(
        s.update_trigger(&trigger(&f, "x", "/x")).await.unwrap_err(),
        Error::TRIGGER_NOT_FOUND
    );
    assert_eq!(s.get_trigger(&t2.id).await.unwrap(), t2);

    // A trigger may keep its own source on update.
    let mut u = t2.clone();
    u.name = "renamed".into();
    u.updated_at = t(9);
    s.update_trigger(&u).await.unwrap();
    assert_eq!(s.get_trigger(&t2.id).await.unwrap(), u);
    let mut moved = u.clone();
    moved.source = "/three".into();
    moved.app_id = b.id.clone();
    moved.created_at = t(50);
    s.update_trigger(&moved).await.unwrap();
    moved.app_id = a.id.clone();
    moved.created_at = t2.created_at;
    assert_eq!(
        s.get_trigger_by_source(&a.id, "http", "/three")
            .await
            .unwrap(),
        moved
    );
    assert_eq!(
        s.get_trigger_by_source(&a.id, "http", "/two")
            .await
            .unwrap_err(),
        Error::TRIGGER_NOT_FOUND
    );

    s.remove_trigger(&t1.id).await.unwrap();
    assert_eq!(
        s.get_trigger(&t1.id).await.unwrap_err(),
        Error::TRIGGER_NOT_FOUND
    );
    assert_eq!(
        s.remove_trigger(&t1.id).await.unwrap_err(),
        Error::TRIGGER_NOT_FOUND
    );
    // Its source is free again.
    s.insert_trigger(&trigger(&g, "again", "/one"))
        .await
        .unwrap();
    clean(&s).await;
}

/// Removing a fn takes its triggers, calls, logs and pending calls; removing
/// an app takes its fns and all of theirs. Nothing of others is touched.
pub async fn cascades(s: Store) {
    assert_empty_start(&s).await;
    let a = app("ca");
    let keep = app("keep");
    s.insert_app(&a).await.unwrap();
    s.insert_app(&keep).await.unwrap();
    let f = func(&a.id, "f");
    let g = func(&a.id, "g");
    let k = func(&keep.id, "k");
    let mut fill = Vec::new();
    for x in [&f, &g, &k] {
        s.insert_fn(x).await.unwrap();
        let tr = trigger(x, "t", &format!("/{}", x.name));
        s.insert_trigger(&tr).await.unwrap();
        let ids = call_ids(2);
        let done = call(x, &ids[0]);
        let mut queued = call(x, &ids[1]);
        queued.status = CallStatus::Queued;
        queued.kind = CallType::Detached;
        s.put_calls(std::slice::from_ref(&done)).await.unwrap();
        s.put_logs(&[(done.id.clone(), x.id.clone(), b"log".to_vec())])
            .await
            .unwrap();
        s.insert_pending(&queued, &pending_of(&queued))
            .await
            .unwrap();
        fill.push((x.clone(), tr, done, queued));
    }

    let check = async |present: Vec<usize>, absent: Vec<usize>| {
        let pending: Vec<String> = s
            .list_pending()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.call_id)
            .collect();
        for i in present {
            let (x, tr, done, queued) = &fill[i];
            assert_eq!(&s.get_fn(&x.id).await.unwrap(), x);
            assert_eq!(&s.get_trigger(&tr.id).await.unwrap(), tr);
            assert_eq!(&s.get_call(&x.id, &done.id).await.unwrap(), done);
            assert_eq!(s.get_log(&done.id).await.unwrap(), b"log");
            assert!(pending.contains(&queued.id));
        }
        for i in absent {
            let (x, tr, done, queued) = &fill[i];
            assert_eq!(s.get_fn(&x.id).await.unwrap_err(), Error::FN_NOT_FOUND);
            assert_eq!(
                s.get_trigger(&tr.id).await.unwrap_err(),
                Error::TRIGGER_NOT_FOUND
            );
            assert_eq!(
                s.get_trigger_by_source(&x.app_id, "http", &tr.source)
                    .await
                    .unwrap_err(),
                Error::TRIGGER_NOT_FOUND
            );
            assert_eq!(
                s.get_call(&x.id, &done.id).await.unwrap_err(),
                Error::CALL_NOT_FOUND
            );
            assert_eq!(
                s.get_call(&x.id, &queued.id).await.unwrap_err(),
                Error::CALL_NOT_FOUND
            );
            assert_eq!(
                s.get_log(&done.id).await.unwrap_err(),
                Error::CALL_LOG_NOT_FOUND
            );
            assert!(!pending.contains(&queued.id));
        }
    };
    check(vec![0, 1, 2], vec![]).await;
    s.remove_fn(&f.id).await.unwrap();
    check(vec![1, 2], vec![0]).await;
    s.remove_app(&a.id).await.unwrap();
    check(vec![2], vec![0, 1]).await;
    let fns = s
        .list_fns(&FnFilter {
            app_id: a.id.clone(),
            ..all()
        })
        .await
        .unwrap();
    assert!(fns.is_empty());
    let trs = s
        .list_triggers(&TriggerFilter {
            app_id: a.id.clone(),
            ..all()
        })
        .await
        .unwrap();
    assert!(trs.is_empty());

    // A call record or log arriving after its fn is gone is dropped.
    let (x, _, _, _) = &fill[0];
    let late = call(x, &new_id());
    s.put_calls(std::slice::from_ref(&late)).await.unwrap();
    s.put_logs(&[(late.id.clone(), x.id.clone(), b"late".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        s.get_call(&x.id, &late.id).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    assert_eq!(
        s.get_log(&late.id).await.unwrap_err(),
        Error::CALL_LOG_NOT_FOUND
    );
    clean(&s).await;
    check(vec![], vec![0, 1, 2]).await;
}

/// Apps by name: full pages, the cursor after the last full page, cursors
/// past the end, the name filter, page sizes.
pub async fn app_pagination(s: Store) {
    assert_empty_start(&s).await;
    // Byte order: upper case before lower case, '-' before digits.
    let names = ["B", "a", "a-1", "a0", "b", "c_x"];
    for n in names.iter().rev() {
        s.insert_app(&app(n)).await.unwrap();
    }
    let page = |cursor: Option<&str>, per_page: u32| AppFilter {
        name: None,
        cursor: cursor.map(str::to_string),
        per_page,
    };
    assert_eq!(names_of_apps(&s, page(None, 0)).await, names);
    assert_eq!(names_of_apps(&s, page(None, 100)).await, names);
    assert_eq!(names_of_apps(&s, page(None, 1)).await, ["B"]);
    // Walk in pages of 2: exactly three full pages, then an empty one.
    let mut cursor = None;
    let mut seen = Vec::new();
    for round in 0..4 {
        let got = names_of_apps(&s, page(cursor.as_deref(), 2)).await;
        if round == 3 {
            assert!(got.is_empty(), "page after the last full page: {got:?}");
            break;
        }
        assert_eq!(got.len(), 2);
        cursor = got.last().cloned();
        seen.extend(got);
    }
    assert_eq!(seen, names);
    // Pages of 4: a full page, then a partial one.
    assert_eq!(
        names_of_apps(&s, page(None, 4)).await,
        ["B", "a", "a-1", "a0"]
    );
    assert_eq!(names_of_apps(&s, page(Some("a0"), 4)).await, ["b", "c_x"]);
    // A cursor need not be a stored name.
    assert_eq!(names_of_apps(&s, page(Some("a-"), 2)).await, ["a-1", "a0"]);
    assert!(names_of_apps(&s, page(Some("c_x"), 2)).await.is_empty());
    assert!(names_of_apps(&s, page(Some("zzz"), 2)).await.is_empty());
    // Name filter is exact, and combines with the cursor.
    let named = |n: &str, cursor: Option<&str>| AppFilter {
        name: Some(n.into()),
        cursor: cursor.map(str::to_string),
        per_page: 30,
    };
    assert_eq!(names_of_apps(&s, named("a", None)).await, ["a"]);
    assert!(names_of_apps(&s, named("A", None)).await.is_empty());
    assert!(names_of_apps(&s, named("a%", None)).await.is_empty());
    assert!(names_of_apps(&s, named("a", Some("a"))).await.is_empty());
    assert_eq!(names_of_apps(&s, named("b", Some("a"))).await, ["b"]);
    clean(&s).await;
}

/// Fns of one app by name, other apps' fns never listed.
pub async fn fn_pagination(s: Store) {
    assert_empty_start(&s).await;
    let a = app("pa");
    let b = app("pb");
    s.insert_app(&a).await.unwrap();
    s.insert_app(&b).await.unwrap();
    for n in ["e", "d", "c", "b", "a"] {
        s.insert_fn(&func(&a.id, n)).await.unwrap();
        s.insert_fn(&func(&b.id, &format!("{n}{n}"))).await.unwrap();
    }
    let list = async |name: Option<&str>, cursor: Option<&str>, per_page: u32| {
        s.list_fns(&FnFilter {
            app_id: a.id.clone(),
            name: name.map(str::to_string),
            cursor: cursor.map(str::to_string),
            per_page,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|f| {
            assert_eq!(f.app_id, a.id);
            f.name
        })
        .collect::<Vec<_>>()
    };
    assert_eq!(list(None, None, 0).await, ["a", "b", "c", "d", "e"]);
    assert_eq!(list(None, None, 3).await, ["a", "b", "c"]);
    assert_eq!(list(None, Some("c"), 3).await, ["d", "e"]);
    assert_eq!(list(None, Some("a"), 4).await, ["b", "c", "d", "e"]);
    assert!(list(None, Some("e"), 4).await.is_empty());
    assert!(list(None, Some("zz"), 4).await.is_empty());
    assert_eq!(list(Some("d"), None, 30).await, ["d"]);
    assert!(list(Some("dd"), None, 30).await.is_empty());
    let none = s
        .list_fns(&FnFilter {
            app_id: new_id(),
            ..all()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    clean(&s).await;
}

/// Triggers of one app by name, optionally of one fn and by name.
pub async fn trigger_pagination(s: Store) {
    assert_empty_start(&s).await;
    let a = app("qa");
    let b = app("qb");
    s.insert_app(&a).await.unwrap();
    s.insert_app(&b).await.unwrap();
    let f = func(&a.id, "f");
    let g = func(&a.id, "g");
    let h = func(&b.id, "h");
    for x in [&f, &g, &h] {
        s.insert_fn(x).await.unwrap();
    }
    for (x, n) in [(&f, "t1"), (&g, "t2"), (&f, "t3"), (&g, "t4"), (&h, "t0")] {
        s.insert_trigger(&trigger(x, n, &format!("/{n}")))
            .await
            .unwrap();
    }
    let list = async |fn_id: Option<&str>, name: Option<&str>, cursor: Option<&str>, pp: u32| {
        s.list_triggers(&TriggerFilter {
            app_id: a.id.clone(),
            fn_id: fn_id.map(str::to_string),
            name: name.map(str::to_string),
            cursor: cursor.map(str::to_string),
            per_page: pp,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
    };
    assert_eq!(list(None, None, None, 0).await, ["t1", "t2", "t3", "t4"]);
    assert_eq!(list(None, None, None, 2).await, ["t1", "t2"]);
    assert_eq!(list(None, None, Some("t2"), 2).await, ["t3", "t4"]);
    assert!(list(None, None, Some("t4"), 2).await.is_empty());
    assert_eq!(list(Some(&f.id), None, None, 0).await, ["t1", "t3"]);
    assert_eq!(list(Some(&g.id), None, Some("t2"), 0).await, ["t4"]);
    assert_eq!(list(None, Some("t3"), None, 0).await, ["t3"]);
    assert!(list(Some(&g.id), Some("t3"), None, 0).await.is_empty());
    assert!(list(Some(&h.id), None, None, 0).await.is_empty());
    clean(&s).await;
}

/// Annotations keep their key order (also nested), values their JSON type;
/// config, unicode and empty-vs-absent optional fields come back as stored.
pub async fn round_trips(s: Store) {
    assert_empty_start(&s).await;
    let ann = json!({
        "zeta": 1,
        "alpha": {"z": [3, 2, 1], "a": null, "m": {"y": true, "b": 1.5}},
        "fnproject.io/fn/invokeEndpoint": "http://x/invoke/y",
        "mid": "ünïcødé ✓",
    });
    let ann = ann.as_object().unwrap().clone();
    let mut a = app("ŝpecial_名前-1");
    a.annotations = ann.clone();
    a.syslog_url = Some(String::new());
    a.config.insert("Z".into(), "last".into());
    a.config.insert("A".into(), "ünïcødé".into());
    a.config.insert("EMPTY".into(), String::new());
    a.created_at = DateTime::from_millis(1_555_000_000_001);
    a.updated_at = DateTime::from_millis(1_555_000_000_999);
    s.insert_app(&a).await.unwrap();
    let got = s.get_app(&a.id).await.unwrap();
    assert_eq!(got, a);
    assert_eq!(
        serde_json::to_string(&got.annotations).unwrap(),
        serde_json::to_string(&ann).unwrap(),
        "annotation key order must survive storage"
    );
    let listed = s.list_apps(&all()).await.unwrap();
    assert_eq!(
        serde_json::to_string(&listed[0].annotations).unwrap(),
        serde_json::to_string(&ann).unwrap()
    );

    let mut f = func(&a.id, "f");
    f.annotations = ann.clone();
    f.memory = 8192;
    f.format = Some(String::new());
    s.insert_fn(&f).await.unwrap();
    let got = s.get_fn(&f.id).await.unwrap();
    assert_eq!(got, f);
    assert_eq!(
        serde_json::to_string(&got.annotations).unwrap(),
        serde_json::to_string(&ann).unwrap()
    );

    let mut tr = trigger(&f, "t", "/a/b?c=d é");
    tr.annotations = ann.clone();
    s.insert_trigger(&tr).await.unwrap();
    let got = s.get_trigger(&tr.id).await.unwrap();
    assert_eq!(
        serde_json::to_string(&got.annotations).unwrap(),
        serde_json::to_string(&ann).unwrap()
    );
    assert_eq!(got, tr);
    assert_eq!(
        s.get_trigger_by_source(&a.id, "http", "/a/b?c=d é")
            .await
            .unwrap(),
        tr
    );

    // Go's zero time survives too.
    let mut z = app("zero");
    z.created_at = DateTime::ZERO;
    z.updated_at = DateTime::ZERO;
    s.insert_app(&z).await.unwrap();
    assert_eq!(s.get_app(&z.id).await.unwrap(), z);
    clean(&s).await;
}

/// Call records: upsert, newest first, `id < cursor` pages, per-fn scope,
/// retention.
pub async fn calls(s: Store) {
    assert_empty_start(&s).await;
    let a = app("calls");
    s.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    let g = func(&a.id, "g");
    s.insert_fn(&f).await.unwrap();
    s.insert_fn(&g).await.unwrap();
    let ids = call_ids(7);
    let mut batch: Vec<Call> = ids.iter().map(|id| call(&f, id)).collect();
    batch[0].status = CallStatus::Error;
    batch[0].error = Some("boom".into());
    batch[0].http_status = Some(502);
    batch[1].started_at = None;
    batch[1].completed_at = None;
    batch[1].http_status = None;
    batch[1].status = CallStatus::Running;
    batch[2].kind = CallType::Detached;
    batch[2].trigger_id = Some(new_id());
    batch[3]
        .stats
        .insert("cold_start_ms".into(), json!({"z": 1, "a": 2}));
    // Store out of order: order comes from the ids.
    let mut shuffled = batch.clone();
    shuffled.reverse();
    shuffled.swap(1, 4);
    s.put_calls(&shuffled).await.unwrap();
    let other = call(&g, &new_id());
    s.put_calls(std::slice::from_ref(&other)).await.unwrap();
    s.put_calls(&[]).await.unwrap();

    for c in &batch {
        assert_eq!(&s.get_call(&f.id, &c.id).await.unwrap(), c);
    }
    assert_eq!(
        s.get_call(&g.id, &batch[0].id).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    assert_eq!(
        s.get_call(&f.id, &new_id()).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );

    let list = async |fn_id: &str, cursor: Option<&str>, per_page: u32| {
        s.list_calls(&CallFilter {
            fn_id: fn_id.into(),
            cursor: cursor.map(str::to_string),
            per_page,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect::<Vec<_>>()
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list(&f.id, None, 0).await, newest_first);
    assert_eq!(list(&f.id, None, 3).await, newest_first[..3]);
    assert_eq!(
        list(&f.id, Some(&newest_first[2]), 3).await,
        newest_first[3..6]
    );
    assert_eq!(
        list(&f.id, Some(&newest_first[5]), 3).await,
        newest_first[6..]
    );
    assert!(list(&f.id, Some(&ids[0]), 3).await.is_empty());
    assert_eq!(list(&g.id, None, 0).await, std::slice::from_ref(&other.id));

    // Upsert: a later record of the same call replaces the earlier one.
    let mut done = batch[1].clone();
    done.status = CallStatus::Timeout;
    done.completed_at = Some(t(40));
    done.error = Some("timed out".into());
    done.http_status = Some(504);
    s.put_calls(std::slice::from_ref(&done)).await.unwrap();
    assert_eq!(s.get_call(&f.id, &done.id).await.unwrap(), done);
    assert_eq!(list(&f.id, None, 0).await.len(), 7);

    // Retention: keep the 3 newest of f (and g's only one).
    for c in &batch {
        s.put_logs(&[(c.id.clone(), f.id.clone(), b"x".to_vec())])
            .await
            .unwrap();
    }
    assert_eq!(s.prune_calls(3).await.unwrap(), 4);
    assert_eq!(list(&f.id, None, 0).await, newest_first[..3]);
    assert_eq!(list(&g.id, None, 0).await, std::slice::from_ref(&other.id));
    for c in &batch[..4] {
        assert_eq!(
            s.get_log(&c.id).await.unwrap_err(),
            Error::CALL_LOG_NOT_FOUND
        );
    }
    for c in &batch[4..] {
        assert_eq!(s.get_log(&c.id).await.unwrap(), b"x");
    }
    assert_eq!(s.prune_calls(3).await.unwrap(), 0);
    assert_eq!(s.prune_calls(0).await.unwrap(), 4);
    assert!(list(&f.id, None, 0).await.is_empty());
    assert!(list(&g.id, None, 0).await.is_empty());
    clean(&s).await;
}

/// Logs: appends in order (within and across batches), bytes untouched.
pub async fn logs(s: Store) {
    assert_empty_start(&s).await;
    let a = app("logs");
    s.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    s.insert_fn(&f).await.unwrap();
    let (c1, c2) = (new_id(), new_id());
    assert_eq!(s.get_log(&c1).await.unwrap_err(), Error::CALL_LOG_NOT_FOUND);
    s.put_logs(&[
        (c1.clone(), f.id.clone(), b"hello ".to_vec()),
        (c2.clone(), f.id.clone(), vec![0xff, 0x00, 0xfe]),
        (c1.clone(), f.id.clone(), b"world\n".to_vec()),
    ])
    .await
    .unwrap();
    s.put_logs(&[]).await.unwrap();
    assert_eq!(s.get_log(&c1).await.unwrap(), b"hello world\n");
    assert_eq!(s.get_log(&c2).await.unwrap(), [0xff, 0x00, 0xfe]);
    s.put_logs(&[(c1.clone(), f.id.clone(), b"more".to_vec())])
        .await
        .unwrap();
    s.put_logs(&[(c2.clone(), f.id.clone(), Vec::new())])
        .await
        .unwrap();
    assert_eq!(s.get_log(&c1).await.unwrap(), b"hello world\nmore");
    assert_eq!(s.get_log(&c2).await.unwrap(), [0xff, 0x00, 0xfe]);
    // A big log survives whole.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let c3 = new_id();
    s.put_logs(&[(c3.clone(), f.id.clone(), big.clone())])
        .await
        .unwrap();
    assert_eq!(s.get_log(&c3).await.unwrap(), big);
    clean(&s).await;
}

/// One batch of records as the agent's recorder writes it: many calls and
/// logs in one `put_records` (more rows than one statement holds), a record
/// sent twice (the last one counts), records of a fn that is gone (dropped),
/// and empty logs (nothing stored).
pub async fn record_batches(s: Store) {
    assert_empty_start(&s).await;
    let a = app("batches");
    s.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    s.insert_fn(&f).await.unwrap();
    let gone = func(&a.id, "gone");
    let ids = call_ids(150);
    let mut calls: Vec<Call> = ids.iter().map(|id| call(&f, id)).collect();
    let mut later = calls[7].clone();
    later.status = CallStatus::Timeout;
    later.error = Some("timed out".into());
    later.http_status = Some(504);
    calls.push(later.clone());
    let orphan = call(&gone, &new_id());
    calls.push(orphan.clone());
    let mut logs: Vec<(String, String, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), f.id.clone(), format!("line {i}\n").into_bytes()))
        .collect();
    logs.push((ids[3].clone(), f.id.clone(), b"second\n".to_vec()));
    logs.push((ids[4].clone(), f.id.clone(), Vec::new()));
    logs.push((orphan.id.clone(), gone.id.clone(), b"orphan".to_vec()));
    let quiet = call(&f, &new_id());
    calls.push(quiet.clone());
    logs.push((quiet.id.clone(), f.id.clone(), Vec::new()));
    s.put_records(&calls, &logs).await.unwrap();

    let listed = s
        .list_calls(&CallFilter {
            fn_id: f.id.clone(),
            cursor: None,
            per_page: 0,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 151);
    assert_eq!(s.get_call(&f.id, &later.id).await.unwrap(), later);
    assert_eq!(s.get_call(&f.id, &ids[8]).await.unwrap(), calls[8]);
    assert_eq!(
        s.get_call(&gone.id, &orphan.id).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    assert_eq!(s.get_log(&ids[0]).await.unwrap(), b"line 0\n");
    assert_eq!(s.get_log(&ids[149]).await.unwrap(), b"line 149\n");
    assert_eq!(s.get_log(&ids[3]).await.unwrap(), b"line 3\nsecond\n");
    assert_eq!(s.get_log(&ids[4]).await.unwrap(), b"line 4\n");
    assert_eq!(
        s.get_log(&orphan.id).await.unwrap_err(),
        Error::CALL_LOG_NOT_FOUND
    );
    assert_eq!(
        s.get_log(&quiet.id).await.unwrap_err(),
        Error::CALL_LOG_NOT_FOUND
    );
    clean(&s).await;
}

/// Logs that come with their call records (in the same `put_records`) and
/// are appended to later, in every order: a log before its record, appends
/// between two records of a call, a log that comes with a second record;
/// binary bytes; batches of odd sizes. They read whole and in order, and
/// go with their call on prune, fn removal and app removal.
pub async fn logs_with_records(s: Store) {
    assert_empty_start(&s).await;
    let a = app("logrec");
    s.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    let g = func(&a.id, "g");
    s.insert_fn(&f).await.unwrap();
    s.insert_fn(&g).await.unwrap();
    let log = |id: &str, x: &Fn, b: &[u8]| (id.to_string(), x.id.clone(), b.to_vec());
    let ids = call_ids(5);
    let c: Vec<Call> = ids.iter().map(|id| call(&f, id)).collect();
    let (c0, c1, c2, c3, c4) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);

    // c0 and c1: record and log together (c1's in two chunks); c2: a log
    // with no record; c3: a record with no log; c4: an empty log.
    s.put_records(
        &[c[0].clone(), c[1].clone(), c[3].clone(), c[4].clone()],
        &[
            log(c0, &f, b"a0 "),
            log(c1, &f, &[0x00, 0xff]),
            log(c2, &f, b"early "),
            log(c1, &f, &[0xfe]),
            log(c4, &f, b""),
        ],
    )
    .await
    .unwrap();
    assert_eq!(s.get_log(c0).await.unwrap(), b"a0 ");
    assert_eq!(s.get_log(c1).await.unwrap(), [0x00, 0xff, 0xfe]);
    assert_eq!(s.get_log(c2).await.unwrap(), b"early ");
    for id in [c3, c4] {
        assert_eq!(s.get_log(id).await.unwrap_err(), Error::CALL_LOG_NOT_FOUND);
    }
    assert_eq!(s.get_call(&f.id, c0).await.unwrap(), c[0]);

    // Appends, then every call's record again with more log.
    s.put_logs(&[log(c0, &f, b"b0 ")]).await.unwrap();
    s.put_logs(&[log(c0, &f, b"c0 ")]).await.unwrap();
    let mut again: Vec<Call> = c[..4].to_vec();
    for x in &mut again {
        x.status = CallStatus::Error;
        x.error = Some("again".into());
    }
    s.put_records(
        &again,
        &[
            log(c3, &f, b"three"),
            log(c0, &f, b"d0"),
            log(c1, &f, &[0x01]),
            log(c2, &f, b"late"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(s.get_log(c0).await.unwrap(), b"a0 b0 c0 d0");
    assert_eq!(s.get_log(c1).await.unwrap(), [0x00, 0xff, 0xfe, 0x01]);
    assert_eq!(s.get_log(c2).await.unwrap(), b"early late");
    assert_eq!(s.get_log(c3).await.unwrap(), b"three");
    for x in &again {
        assert_eq!(&s.get_call(&f.id, &x.id).await.unwrap(), x);
    }
    // A record without a log keeps the log written so far.
    s.put_calls(&c[..1]).await.unwrap();
    assert_eq!(s.get_call(&f.id, c0).await.unwrap(), c[0]);
    assert_eq!(s.get_log(c0).await.unwrap(), b"a0 b0 c0 d0");
    s.put_logs(&[log(c3, &f, b" more")]).await.unwrap();
    assert_eq!(s.get_log(c3).await.unwrap(), b"three more");

    // A batch of 61 calls of g, 3 of which have a log already.
    let gids = call_ids(61);
    for i in [0, 30, 60] {
        s.put_logs(&[log(&gids[i], &g, b"pre ")]).await.unwrap();
    }
    let gcalls: Vec<Call> = gids.iter().map(|id| call(&g, id)).collect();
    let glogs: Vec<(String, String, Vec<u8>)> = gids
        .iter()
        .enumerate()
        .map(|(i, id)| log(id, &g, format!("g{i}").as_bytes()))
        .collect();
    s.put_records(&gcalls, &glogs).await.unwrap();
    for (i, id) in gids.iter().enumerate() {
        let pre = if [0, 30, 60].contains(&i) { "pre " } else { "" };
        assert_eq!(
            String::from_utf8(s.get_log(id).await.unwrap()).unwrap(),
            format!("{pre}g{i}")
        );
    }

    // Retention: f keeps c3 and c4, g its 2 newest; the others' logs go
    // (c2's too: its record came after its first log).
    assert_eq!(s.prune_calls(2).await.unwrap(), 3 + 59);
    for id in [c0, c1, c2].into_iter().chain(&gids[..59]) {
        assert_eq!(s.get_log(id).await.unwrap_err(), Error::CALL_LOG_NOT_FOUND);
    }
    assert_eq!(s.get_log(c3).await.unwrap(), b"three more");
    assert_eq!(s.get_log(&gids[60]).await.unwrap(), b"pre g60");
    assert_eq!(s.get_log(&gids[59]).await.unwrap(), b"g59");

    // Removing f takes c3's log (row and appended part); removing the app
    // takes g's.
    s.remove_fn(&f.id).await.unwrap();
    assert_eq!(s.get_log(c3).await.unwrap_err(), Error::CALL_LOG_NOT_FOUND);
    assert_eq!(s.get_log(&gids[59]).await.unwrap(), b"g59");
    s.remove_app(&a.id).await.unwrap();
    for id in &gids[59..] {
        assert_eq!(s.get_log(id).await.unwrap_err(), Error::CALL_LOG_NOT_FOUND);
    }
    clean(&s).await;
}

/// Pending detached calls: written with their record, listed oldest first,
/// attempts counted, removed, spared by retention, gone with their fn.
pub async fn pending(s: Store) {
    assert_empty_start(&s).await;
    let a = app("pending");
    s.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    s.insert_fn(&f).await.unwrap();
    assert!(s.list_pending().await.unwrap().is_empty());

    let ids = call_ids(3);
    let mut calls = Vec::new();
    for id in ids.iter().rev() {
        let mut c = call(&f, id);
        c.kind = CallType::Detached;
        c.status = CallStatus::Queued;
        c.started_at = None;
        c.completed_at = None;
        c.http_status = None;
        let mut p = pending_of(&c);
        p.trigger_id = Some("trig".into());
        p.body = id.as_bytes().to_vec();
        s.insert_pending(&c, &p).await.unwrap();
        calls.push((c, p));
    }
    calls.reverse();
    let listed = s.list_pending().await.unwrap();
    let expected: Vec<PendingCall> = calls.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(listed, expected);
    for (c, _) in &calls {
        assert_eq!(&s.get_call(&f.id, &c.id).await.unwrap(), c);
    }

    s.bump_pending_attempts(&ids[1]).await.unwrap();
    s.bump_pending_attempts(&ids[1]).await.unwrap();
    assert_eq!(
        s.bump_pending_attempts(&new_id()).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    let listed = s.list_pending().await.unwrap();
    assert_eq!(listed[1].attempts, 2);
    assert_eq!(listed[0].attempts, 0);

    // Retention never drops a call still waiting to run.
    s.put_calls(&[call(&f, &new_id())]).await.unwrap();
    assert_eq!(s.prune_calls(0).await.unwrap(), 1);
    assert_eq!(s.list_pending().await.unwrap().len(), 3);
    for (c, _) in &calls {
        s.get_call(&f.id, &c.id).await.unwrap();
    }

    s.remove_pending(&ids[0]).await.unwrap();
    s.remove_pending(&ids[0]).await.unwrap();
    let left: Vec<String> = s
        .list_pending()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.call_id)
        .collect();
    assert_eq!(left, ids[1..]);
    // The record stays (it is the call's history).
    s.get_call(&f.id, &ids[0]).await.unwrap();

    // A pending call of a missing fn: 404 and nothing written.
    let ghost = func(&a.id, "ghost");
    let c = call(&ghost, &new_id());
    assert_eq!(
        s.insert_pending(&c, &pending_of(&c)).await.unwrap_err(),
        Error::FN_NOT_FOUND
    );
    assert_eq!(s.list_pending().await.unwrap().len(), 2);
    assert_eq!(
        s.get_call(&ghost.id, &c.id).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    clean(&s).await;
    assert!(s.list_pending().await.unwrap().is_empty());
}

/// Pending calls listed in pages without their bodies (oldest first, after
/// a cursor), and one fetched whole by id.
pub async fn pending_pages(s: Store) {
    assert_empty_start(&s).await;
    let a = app("pending-pages");
    s.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    let g = func(&a.id, "g");
    s.insert_fn(&f).await.unwrap();
    s.insert_fn(&g).await.unwrap();
    assert!(s.list_pending_page(None, 0).await.unwrap().is_empty());
    assert!(s.list_pending_page(None, 2).await.unwrap().is_empty());

    let ids = call_ids(5);
    let mut expected = Vec::new();
    let mut whole = Vec::new();
    // Inserted newest first: the listing orders them.
    for (i, id) in ids.iter().enumerate().rev() {
        let owner = if i % 2 == 0 { &f } else { &g };
        let mut c = call(owner, id);
        c.kind = CallType::Detached;
        c.status = CallStatus::Queued;
        c.created_at = t(10 + i as i64);
        c.started_at = None;
        c.completed_at = None;
        c.http_status = None;
        let mut p = pending_of(&c);
        p.body = format!("body of {i}").repeat(i + 1).into_bytes();
        s.insert_pending(&c, &p).await.unwrap();
        expected.push(PendingSummary {
            call_id: id.clone(),
            fn_id: owner.id.clone(),
            attempts: 0,
            created_at: c.created_at,
        });
        whole.push(p);
    }
    expected.reverse();
    whole.reverse();
    assert_eq!(s.list_pending_page(None, 0).await.unwrap(), expected);

    // Pages of 2 after the last id seen: 2, 2, 1, then none.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = s.list_pending_page(cursor.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.call_id.clone());
        seen.extend(page);
    }
    assert_eq!(seen, expected);
    assert_eq!(
        s.list_pending_page(Some(&ids[1]), 0).await.unwrap(),
        expected[2..]
    );
    assert!(
        s.list_pending_page(Some(&ids[4]), 3)
            .await
            .unwrap()
            .is_empty()
    );

    // One at a time, whole; attempts show in both.
    for p in &whole {
        assert_eq!(&s.get_pending(&p.call_id).await.unwrap(), p);
    }
    s.bump_pending_attempts(&ids[3]).await.unwrap();
    assert_eq!(s.get_pending(&ids[3]).await.unwrap().attempts, 1);
    assert_eq!(
        s.list_pending_page(Some(&ids[2]), 1).await.unwrap()[0].attempts,
        1
    );
    assert_eq!(
        s.get_pending(&new_id()).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );

    // Removed ones are gone from both.
    s.remove_pending(&ids[0]).await.unwrap();
    assert_eq!(
        s.get_pending(&ids[0]).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    let left: Vec<String> = s
        .list_pending_page(None, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.call_id)
        .collect();
    assert_eq!(left, ids[1..]);
    // Gone with their fn.
    s.remove_fn(&g.id).await.unwrap();
    let left: Vec<String> = s
        .list_pending_page(None, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.call_id)
        .collect();
    assert_eq!(left, [ids[2].clone(), ids[4].clone()]);
    assert_eq!(
        s.get_pending(&ids[1]).await.unwrap_err(),
        Error::CALL_NOT_FOUND
    );
    clean(&s).await;
    assert!(s.list_pending_page(None, 0).await.unwrap().is_empty());
}

/// 8 tasks × 25 creates at once all land; 8 tasks racing for the same 25
/// names: each name is won exactly once and lost with a 409 seven times.
pub async fn concurrent_writers(s: Store) {
    assert_empty_start(&s).await;
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let mut joins = Vec::new();
    for task in 0..TASKS {
        let s = s.clone();
        joins.push(tokio::spawn(async move {
            for i in 0..EACH {
                s.insert_app(&app(&format!("c{task}-{i:02}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let apps = s.list_apps(&all()).await.unwrap();
    assert_eq!(apps.len(), TASKS * EACH);

    // Racing on names: apps, then fns and triggers in one app.
    let host = s.list_apps(&all()).await.unwrap().remove(0);
    let f0 = func(&host.id, "f0");
    s.insert_fn(&f0).await.unwrap();
    let mut joins = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        let (app_id, f0) = (host.id.clone(), f0.clone());
        joins.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..EACH {
                let r1 = s.insert_app(&app(&format!("dup-{i:02}"))).await;
                let r2 = s.insert_fn(&func(&app_id, &format!("dup-{i:02}"))).await;
                let r3 = s
                    .insert_trigger(&trigger(&f0, "t", &format!("/dup-{i:02}")))
                    .await;
                results.push((r1, r2, r3));
            }
            results
        }));
    }
    let mut wins = [[0usize; 3]; EACH];
    for j in joins {
        for (i, (r1, r2, r3)) in j.await.unwrap().into_iter().enumerate() {
            for (k, (r, lost)) in [
                (r1, Error::APP_ALREADY_EXISTS),
                (r2, Error::FN_ALREADY_EXISTS),
                (r3, Error::TRIGGER_SOURCE_EXISTS),
            ]
            .into_iter()
            .enumerate()
            {
                match r {
                    Ok(()) => wins[i][k] += 1,
                    Err(e) if k == 2 && e == Error::TRIGGER_EXISTS => {}
                    Err(e) => assert_eq!(e, lost, "name {i}, kind {k}"),
                }
            }
        }
    }
    for (i, w) in wins.iter().enumerate() {
        assert_eq!(w[0], 1, "app dup-{i:02} created {} times", w[0]);
        assert_eq!(w[1], 1, "fn dup-{i:02} created {} times", w[1]);
    }
    // Triggers all share one name on f0: only one of all can exist.
    let trs = s
        .list_triggers(&TriggerFilter {
            app_id: host.id.clone(),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(trs.len(), 1);
    assert_eq!(wins.iter().map(|w| w[2]).sum::<usize>(), 1);
    assert_eq!(
        s.list_apps(&all()).await.unwrap().len(),
        TASKS * EACH + EACH
    );
    let fns = s
        .list_fns(&FnFilter {
            app_id: host.id.clone(),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(fns.len(), EACH + 1);
    clean(&s).await;
}
