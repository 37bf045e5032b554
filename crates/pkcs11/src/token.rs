//! A logged-in token. PKCS#11 calls block (an HSM over the network, an SGX enclave's
//! ecall), so they run on threads of the token's own, each with a session of its own;
//! callers await the answer and the worker threads of the proxy never wait on a token.
//!
//! One module is loaded and initialized once per process, and one token (module and
//! slot) is opened once however many keys use it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::uri::Pkcs11Uri;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri}: {message}")]
pub struct Pkcs11Error {
    /// The URI without anything secret.
    pub uri: String,
    pub message: String,
}

impl Pkcs11Error {
    pub(crate) fn new(uri: &str, message: impl std::fmt::Display) -> Self {
        Pkcs11Error {
            uri: uri.to_string(),
            message: message.to_string(),
        }
    }
}

type Job = Box<dyn FnOnce(&Session) + Send>;

pub struct Token {
    /// How messages name the token: its URI's path and module.
    pub(crate) name: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// The modules this process loaded, by path (initialized once each).
fn modules() -> &'static Mutex<HashMap<String, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<String, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

/// The tokens open now, by module path and slot id.
type OpenTokens = Mutex<HashMap<(String, u64), Weak<Token>>>;

fn tokens() -> &'static OpenTokens {
    static TOKENS: OnceLock<OpenTokens> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

fn module(path: &str, name: &str) -> Result<Pkcs11, Pkcs11Error> {
    let mut modules = modules().lock().unwrap();
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path)
        .map_err(|e| Pkcs11Error::new(name, format!("loading module {path}: {e}")))?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(Pkcs11Error::new(name, format!("initializing {path}: {e}"))),
    }
    modules.insert(path.to_string(), m.clone());
    Ok(m)
}

impl Token {
    /// The token `uri` names (by label, serial, manufacturer, model or slot id), logged
    /// in with its PIN, with `sessions` sessions on threads of their own.
    pub fn open(
        uri: &Pkcs11Uri,
        default_module: Option<&str>,
        sessions: usize,
    ) -> Result<Arc<Token>, Pkcs11Error> {
        let name = uri.to_string();
        let path = uri
            .module(default_module)
            .map_err(|e| Pkcs11Error::new(&name, e))?
            .to_string();
        let pkcs11 = module(&path, &name)?;
        let slot = find_slot(&pkcs11, uri, &name)?;
        let key = (path.clone(), slot.id());
        let mut open = tokens().lock().unwrap();
        if let Some(t) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(t);
        }
        let pin = match &uri.pin_source {
            Some(source) => Some(source.read().map_err(|e| Pkcs11Error::new(&name, e))?),
            None => None,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..sessions.max(1) {
            let session = pkcs11
                .open_rw_session(slot)
                .map_err(|e| Pkcs11Error::new(&name, format!("opening a session: {e}")))?;
            if i == 0 {
                login(&session, pin.as_deref()).map_err(|e| Pkcs11Error::new(&name, e))?;
            }
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("pkcs11-{}", slot.id()))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap().recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job(&session);
                })
                .map_err(|e| Pkcs11Error::new(&name, format!("starting a session thread: {e}")))?;
        }
        let token = Arc::new(Token {
            name,
            jobs: Mutex::new(tx),
        });
        open.insert(key, Arc::downgrade(&token));
        Ok(token)
    }

    /// Runs `f` with one of the token's sessions, on its thread; resolves when done.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, CkError> + Send + 'static,
    ) -> Result<T, Pkcs11Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |s| {
            let _ = tx.send(f(s));
        }))?;
        rx.await
            .map_err(|_| Pkcs11Error::new(&self.name, "the token's session thread stopped"))?
            .map_err(|e| Pkcs11Error::new(&self.name, e))
    }

    /// As [`run`](Self::run), waiting on this thread (for callers outside an async
    /// runtime, or on a thread that may block).
    pub fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, CkError> + Send + 'static,
    ) -> Result<T, Pkcs11Error> {
        let (tx, rx) = mpsc::channel();
        self.submit(Box::new(move |s| {
            let _ = tx.send(f(s));
        }))?;
        rx.recv()
            .map_err(|_| Pkcs11Error::new(&self.name, "the token's session thread stopped"))?
            .map_err(|e| Pkcs11Error::new(&self.name, e))
    }

    fn submit(&self, job: Job) -> Result<(), Pkcs11Error> {
        self.jobs
            .lock()
            .unwrap()
            .send(job)
            .map_err(|_| Pkcs11Error::new(&self.name, "the token's session threads stopped"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn login(session: &Session, pin: Option<&str>) -> Result<(), String> {
    let pin = pin.map(|p| AuthPin::new(p.to_string().into()));
    match session.login(UserType::User, pin.as_ref()) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            Err("login refused: the PIN is incorrect".into())
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            Err("login refused: the PIN is locked".into())
        }
        Err(e) => Err(format!("login: {e}")),
    }
}

fn find_slot(pkcs11: &Pkcs11, uri: &Pkcs11Uri, name: &str) -> Result<Slot, Pkcs11Error> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Pkcs11Error::new(name, format!("listing slots: {e}")))?;
    let mut found = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| Pkcs11Error::new(name, format!("reading a token's information: {e}")))?;
        let same = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w == have.trim_end())
        };
        if same(&uri.token, info.label())
            && same(&uri.serial, info.serial_number())
            && same(&uri.manufacturer, info.manufacturer_id())
            && same(&uri.model, info.model())
        {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Pkcs11Error::new(name, "no such token in the module")),
        _ => Err(Pkcs11Error::new(
            name,
            "several tokens match; name one (token, serial or slot-id)",
        )),
    }
}
