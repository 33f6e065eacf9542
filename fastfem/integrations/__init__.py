"""fastfem seen from other tools: the Xplique drop-in (`fastfem.integrations.xplique`), TF
SavedModel export, and heatmap overlays for people and pages."""
