//! Ownership of an instance from its driver's start to its end. An [`Owned`]
//! destroys the instance, removes its iofs directory and gives back its
//! memory when it is dropped, on every path: a call whose future is dropped
//! (the client left) leaves nothing that nobody owns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fnrs_driver::Instance;
use parking_lot::Mutex;

use crate::capacity::Reservation;
use crate::iofs;

/// Every live instance of the agent, by id (health, and the sweep at
/// shutdown).
#[derive(Default)]
pub(crate) struct Live(Mutex<HashMap<String, Arc<dyn Instance>>>);

impl Live {
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Take them all (shutdown).
    pub(crate) fn drain(&self) -> Vec<Arc<dyn Instance>> {
        self.0.lock().drain().map(|(_, i)| i).collect()
    }
}

/// What ending an instance takes.
struct Parts {
    id: String,
    inst: Arc<dyn Instance>,
    dir: Option<PathBuf>,
    reservation: Option<Reservation>,
    live: Arc<Live>,
}

impl Parts {
    async fn end(self) {
        self.inst.destroy().await;
        if let Some(d) = self.dir {
            let _ = tokio::task::spawn_blocking(move || iofs::remove_dir(&d)).await;
        }
        self.live.0.lock().remove(&self.id);
        // The memory is free only once the instance is gone.
        drop(self.reservation);
    }
}

/// An instance with everything it holds; ends it when dropped.
pub(crate) struct Owned(Option<Parts>);

impl Owned {
    /// Take ownership of a started instance (and register it as live).
    pub(crate) fn new(
        live: &Arc<Live>,
        id: String,
        inst: Arc<dyn Instance>,
        dir: Option<PathBuf>,
        reservation: Option<Reservation>,
    ) -> Self {
        live.0.lock().insert(id.clone(), Arc::clone(&inst));
        Self(Some(Parts {
            id,
            inst,
            dir,
            reservation,
            live: Arc::clone(live),
        }))
    }

    fn parts(&self) -> &Parts {
        self.0.as_ref().expect("taken only by destroy and drop")
    }

    pub(crate) fn inst(&self) -> &Arc<dyn Instance> {
        &self.parts().inst
    }

    pub(crate) fn dir(&self) -> Option<&Path> {
        self.parts().dir.as_deref()
    }

    /// End it now and wait until it is gone.
    pub(crate) async fn destroy(mut self) {
        if let Some(p) = self.0.take() {
            p.end().await;
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Without a runtime (the process is exiting) the driver's own
            // instance guard ends it.
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(p.end());
            }
        }
    }
}
