//! dm-ulogd: a single-node server for the Linux device-mapper userspace
//! dirty-log protocol (include/uapi/linux/dm-log-userspace.h).
#![deny(unsafe_code)]

pub mod admin;
pub mod bitmap;
pub mod cli;
pub mod config;
pub mod dmctl;
pub mod engine;
pub mod event_loop;
pub mod log;
pub mod mirrors;
pub mod registry;
pub mod rescue;
pub mod server;
pub mod startup;
pub mod sys;
pub mod table;
pub mod wire;
