//! Evidence: what the flows measure and report, one implementation each. [`checks`] runs the
//! HTTP checks and the integration command; [`load_gate`] judges a load run against the
//! baseline; [`traces`] names the requests a reviewer can cite by trace id; [`logs`] links or copies the app's logs. Imports only lower floors (config, contract, secret, shell, the load engine), so
//! preview and verify share it without reaching into each other.

pub mod checks;
pub mod load_gate;
pub mod logs;
pub mod traces;
