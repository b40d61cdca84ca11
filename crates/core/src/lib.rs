//! wgadm-core
