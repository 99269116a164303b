//! An object-storage mount's statuses.
//!
//! ```text
//! MOUNTING ──► MOUNTED ──stop──► UNMOUNTED ──start──► MOUNTING
//!     └──────────┴──► FAILED (the health loop makes it again)
//! ```

crate::status_enum! {
    /// A mount's status.
    pub enum MountStatus in status {
        Mounting = "MOUNTING" as MOUNTING,
        Mounted = "MOUNTED" as MOUNTED,
        /// The notebook is stopped: the mount is made again at its next start.
        Unmounted = "UNMOUNTED" as UNMOUNTED,
        Failed = "FAILED" as FAILED,
    }
}
