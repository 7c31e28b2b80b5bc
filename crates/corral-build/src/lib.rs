//! Building images: the Containerfile parser, the build cache, and the builder that runs each
//! step (RUN in a real corral container, COPY and ADD straight into a layer).

pub mod builder;
pub mod containerfile;
pub mod diff;
pub mod ignore;
