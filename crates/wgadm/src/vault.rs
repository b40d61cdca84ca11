//! Ansible Vault 1.1/1.2 files (see DESIGN.md). To be written.
