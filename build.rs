//! `sqlx::migrate!` embeds `migrations/` at compile time, and cargo does not
//! know to rebuild when a migration changes: without this, a binary could carry
//! an older text of a migration than the one in the tree.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
