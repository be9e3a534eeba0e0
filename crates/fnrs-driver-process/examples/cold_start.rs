//! Cold-start timing of the process driver alone: `start()` and the time
//! until the function's socket appears, over N starts of a function
//! directory (`cargo run --release --example cold_start -- DIR [N] [POOL]`).
//! The directory needs a func.yaml of an http-stream function.

use std::time::{Duration, Instant};

use fnrs_driver::{Driver, InstanceSpec};
use fnrs_driver_process::{ProcessDriver, ProcessDriverConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("DIR"));
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let pool: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let driver = ProcessDriver::new(ProcessDriverConfig {
        cgroup_parent: "fnrs-cold-example".into(),
        pool_size: pool,
        ..Default::default()
    })?;
    driver.cleanup_leftovers().await?;
    let (mut starts, mut readies, mut closes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        // Let the pool refill (bounded).
        for _ in 0..200 {
            if pool == 0 || driver.health().await["pool"]["idle"].as_u64() >= Some(pool as u64) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let iofs = tempfile::Builder::new().prefix("fnrs-cold-").tempdir()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(iofs.path(), std::fs::Permissions::from_mode(0o777))?;
        let sock = iofs.path().join("lsnr.sock");
        let spec = InstanceSpec {
            id: format!("COLD{}{i:04}", std::process::id()),
            app_id: "a".into(),
            fn_id: "f".into(),
            image: format!("file://{}", dir.display()),
            env: vec![
                ("FN_FORMAT".into(), "http-stream".into()),
                ("FN_LISTENER".into(), "unix:/tmp/iofs/lsnr.sock".into()),
                ("FN_MEMORY".into(), "128".into()),
            ],
            memory_mb: 128,
            iofs_dir: Some(iofs.path().to_path_buf()),
            stdin: false,
            syslog_url: None,
        };
        // SAFETY: plain inotify calls on a local path.
        let ifd = unsafe { libc::inotify_init1(0) };
        let cdir = std::ffi::CString::new(iofs.path().to_str().unwrap())?;
        unsafe { libc::inotify_add_watch(ifd, cdir.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
        let t = Instant::now();
        let inst = driver.start(spec).await?;
        let s = t.elapsed();
        let mut ready = None;
        let mut pfd = libc::pollfd {
            fd: ifd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut buf = [0u8; 4096];
        while t.elapsed() < Duration::from_secs(5) {
            if sock.exists() {
                ready = Some(t.elapsed());
                break;
            }
            // Only inotify wakes us (as the agent without its poll).
            if unsafe { libc::poll(&mut pfd, 1, 1000) } > 0 {
                unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
            } else {
                eprintln!("no inotify event within 1 s");
            }
        }
        let tc = Instant::now();
        unsafe { libc::close(ifd) };
        closes.push(tc.elapsed());
        starts.push(s);
        readies.push(ready.unwrap_or(Duration::from_secs(5)));
        inst.destroy().await;
    }
    closes.sort();
    println!(
        "close(inotify fd) p50 {:?} max {:?}",
        closes[n / 2],
        closes[n - 1]
    );
    starts.sort();
    readies.sort();
    println!(
        "pool {pool}: start p50 {:?} (min {:?}), socket p50 {:?} (min {:?}, max {:?}) over {n}",
        starts[n / 2],
        starts[0],
        readies[n / 2],
        readies[0],
        readies[n - 1]
    );
    drop(driver);
    let _ = fnrs_driver_process::cleanup_cgroup_parent("fnrs-cold-example").await;
    Ok(())
}
