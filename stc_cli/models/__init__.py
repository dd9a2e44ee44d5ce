"""Base systems (one module each) and the random-weight architecture presets they share."""
