//! `sqlx::migrate!` embeds the migrations at compile time; without this, a new migration file
//! is left out of a build that changed nothing else (a stale binary that reports the old
//! schema as current).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
