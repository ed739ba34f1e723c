//! The real `sonde-collector`, started in-process on loopback for a test.

use std::path::Path;

use sonde_collector::{AdminAccess, CollectorState, Policy, Store};

/// A running collector; stops when dropped.
#[derive(Debug)]
pub struct Collector {
    /// `http://127.0.0.1:PORT/v1/reports`.
    pub url: String,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// Its state, to read the store directly.
    pub state: CollectorState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Collector {
    /// Starts a collector with `policy` (TOML) and its database in `dir`.
    pub fn start(dir: &Path, policy: &str) -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let policy = Policy::parse(policy, Path::new("policy.toml")).unwrap();
        let store = Store::sqlite(&dir.join("collector.db")).unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = CollectorState::new(store, policy, AdminAccess::new(None, addr).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(sonde_collector::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Collector {
            url: format!("http://{addr}/v1/reports"),
            addr,
            state,
            stop: Some(stop),
            runtime,
        }
    }

    /// The reports stored for `instance`, newest first.
    pub fn reports(&self, instance: uuid::Uuid) -> Vec<sonde_core::Report> {
        let stored = self
            .runtime
            .block_on(self.state.store().reports(instance, 1000))
            .unwrap()
            .unwrap_or_default();
        stored.iter().map(|json| serde_json::from_str(json).unwrap()).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
