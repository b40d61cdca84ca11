//! QR codes of client configs. To be written.
