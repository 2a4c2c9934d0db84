"""`make report`: what dropout bought on a finished study, with confidence intervals."""
