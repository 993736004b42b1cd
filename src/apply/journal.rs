//! The state journal used during apply: every mutation is applied to the
//! in-memory state and made durable (atomic file write) before the caller
//! continues. Concurrent mutations are committed together (group commit), so
//! hundreds of parallel operations share one fsync instead of queueing for it.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::state::{store, State, StateStore};

type Mutation = Box<dyn FnOnce(&mut State) + Send>;

struct Msg {
    mutation: Mutation,
    ack: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
pub struct Journal {
    state: Arc<Mutex<State>>,
    tx: std::sync::mpsc::Sender<Msg>,
}

impl Journal {
    /// Start the writer thread. A state without lineage gets one at its first write.
    pub fn start(state: State, mut store: StateStore) -> (Journal, std::thread::JoinHandle<()>) {
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("capi-state-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(m) = rx.try_recv() {
                        batch.push(m);
                    }
                    let bytes = {
                        let mut st = shared.lock().unwrap();
                        let mut acks = Vec::with_capacity(batch.len());
                        for m in batch {
                            (m.mutation)(&mut st);
                            acks.push(m.ack);
                        }
                        if st.lineage.is_empty() {
                            st.lineage = uuid::Uuid::new_v4().to_string();
                        }
                        st.serial += 1;
                        st.capi_version = env!("CARGO_PKG_VERSION").to_string();
                        st.gc_documents();
                        (store::encode(&st), acks)
                    };
                    let result = store.write_bytes(&bytes.0).map_err(|e| e.to_string());
                    for ack in bytes.1 {
                        let _ = ack.send(result.clone());
                    }
                }
            })
            .expect("spawn the state writer");
        (Journal { state, tx }, handle)
    }

    /// Apply a mutation and wait until it is on disk.
    pub async fn commit(&self, f: impl FnOnce(&mut State) + Send + 'static) -> Result<(), String> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Msg {
                mutation: Box::new(f),
                ack,
            })
            .map_err(|_| "the state writer stopped".to_string())?;
        rx.await
            .map_err(|_| "the state writer stopped".to_string())?
    }

    /// Read the current in-memory state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap().clone()
    }
}
