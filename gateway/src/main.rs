use clap::Parser;

/// SMPP gateway.
#[derive(Parser, Debug)]
#[command(name = "smpp-gateway", version)]
struct Args {
    /// Address of the HTTP listener.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "smpp-gateway: not implemented yet (http_addr {})",
        args.http_addr
    );
    Ok(())
}
