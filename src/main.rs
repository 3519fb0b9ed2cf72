fn main() {
    println!("lowrank-smc {}", env!("CARGO_PKG_VERSION"));
}
