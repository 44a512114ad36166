//! `recap capsule-image`: build and import the capsule image ahead of time.

use anyhow::Context;
use clap::Args;

use crate::{capsule::image, docker};

#[derive(Debug, Args)]
pub struct CapsuleImageArgs {
    /// Build and import it again even if the engine has it.
    #[arg(long)]
    pub rebuild: bool,
    /// The gdb capsule's image (gdb and its Python library) instead of the base one.
    #[arg(long)]
    pub gdb: bool,
}

pub async fn run(args: CapsuleImageArgs) -> anyhow::Result<()> {
    let docker = docker::connect().await?;
    let image = if args.gdb {
        image::Image::Gdb
    } else {
        image::Image::Base
    };
    if args.rebuild || !image::exists(&docker, image).await? {
        image::build(&docker, image)
            .await
            .context("building the capsule image")?;
        eprintln!("recap: imported {}", image.reference());
    } else {
        eprintln!(
            "recap: {} is already there (--rebuild to make it again)",
            image.reference()
        );
    }
    println!("{}", image.reference());
    Ok(())
}
