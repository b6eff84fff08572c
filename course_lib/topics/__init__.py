"""One module per topic, in chapter order; each imports only core, data, eval and earlier chapters' topics."""
