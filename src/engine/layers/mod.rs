//! The parts families build their models from: linear layers over any weight format, norms,
//! attention, MLPs, embeddings, the LM head, and the two block shapes. Nothing here knows a
//! family; `arch/` says which parts each family uses and where its weights are.

pub(crate) mod attention;
pub(crate) mod attention_rows;
pub(crate) mod block;
pub(crate) mod embedding;
pub(crate) mod head;
pub(crate) mod linear;
pub(crate) mod mlp;
pub(crate) mod norm;
