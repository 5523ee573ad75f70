"""FaR, the Swedish routing register for digital post (built in the digital-post issue)."""
