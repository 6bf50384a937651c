//! Evidence: what the flows measure and report, one implementation each. [`checks`] runs the
//! HTTP checks and the integration command. Imports only lower floors (config, contract,
//! secret, shell), so preview and verify share it without reaching into each other.

pub mod checks;
