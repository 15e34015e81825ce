"""The reporter pages: server-rendered HTML in bokmål, nynorsk and English."""
