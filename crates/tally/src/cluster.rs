//! `tally cluster promote`: makes a replica region the home region when
//! the home region is lost (docs/cluster.md, "Promoting a region").

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tally_engine::ClusterSettings;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Makes this region's mirror of the home stream the cluster's stream,
    /// after the home region is lost. Then restart this region's nodes
    /// without --cluster-home-domain: they take writes from there on.
    Promote(PromoteArgs),
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// This region's NATS servers (`--cluster`), its stream's name and
    /// the credentials and TLS files the nodes use.
    #[command(flatten)]
    pub cluster: ClusterSettings,
    /// Promotes even when the home region's stream still answers through
    /// the leaf node (it would then be a second writable log: stop it
    /// first, and never restart its nodes on it).
    #[arg(long)]
    pub even_if_home_answers: bool,
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Promote(mut args) => {
            if args.cluster.cluster.is_none() {
                bail!("name this region's NATS servers with --cluster nats://HOST:PORT");
            }
            if args.cluster.node_id.is_none() {
                args.cluster.node_id = Some("promote".into());
            }
            let opts = args
                .cluster
                .options()
                .map_err(anyhow::Error::msg)?
                .context("--cluster")?;
            let p = tally_engine::promote(&opts, args.even_if_home_answers).await?;
            println!(
                "stream {} no longer mirrors domain {}: it holds records up to sequence {} ({} records) and takes writes on {}.",
                p.stream, p.former_home, p.last_seq, p.messages, p.subject
            );
            println!(
                "Now restart this region's nodes without --cluster-home-domain (TALLY_CLUSTER_HOME_DOMAIN); they carry on from the sequence each has applied."
            );
            Ok(())
        }
    }
}
