//! The project's lab (crates/lab, `wgadm_lab`) plus [`server`]: the real wgadm binary driving
//! the lab's server. Test files use both with `mod lab;`.
#![allow(dead_code, unused_imports)]

pub mod server;

pub use wgadm_lab::*;
