//! The reference for binary sizes: what std costs with the release profile.
fn main() {
    println!("hello, world");
}
