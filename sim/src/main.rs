fn main() {
    eprintln!("co9p-sim: the simulator is not built yet");
    std::process::exit(2);
}
