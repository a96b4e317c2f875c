use clap::Parser;

/// SmppVendor operator.
#[derive(Parser, Debug)]
#[command(name = "smpp-operator", version)]
struct Args {
    /// Address of the /health, /ready and /metrics listener.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
    http_addr: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("smpp-operator: not implemented yet (http_addr {})", args.http_addr);
    Ok(())
}
