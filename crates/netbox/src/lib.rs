//! wgadm's NetBox integration: [`model`] is pure (which objects the state wants in NetBox and
//! the plan that brings NetBox there); [`client`] is the REST client that observes NetBox, runs
//! the plan and allocates peer addresses. The `wgadm netbox` command wires them.

#![warn(missing_docs)]

pub mod client;
pub mod model;
